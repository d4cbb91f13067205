"""The `clip-search` command as a user runs it: JSON output, labels, image queries, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clip_search import config

REPO = Path(__file__).resolve().parent.parent


def clip_search(*args: str) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(REPO), "TOKENIZERS_PARALLELISM": "false", "CLIP_SEARCH_CACHE": os.environ["CLIP_SEARCH_CACHE"]}
    return subprocess.run([sys.executable, "-m", "clip_search.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_search_json_with_labels_on_the_demo_store() -> None:
    result = clip_search("search", str(config.DEMO_STORE), "drei blaue Quadrate", "--top-k", "4", "--labels", "red, blue, green", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(Path(h["image"]).is_file() and h["caption"] for h in hits)
    assert all(sum(label["probability"] for label in h["labels"]) == pytest.approx(1, abs=1e-4) for h in hits)  # 3 labels + none of these
    assert [h["labels"][0]["label"] for h in hits].count("blue") >= 3
    assert hits[0]["band"] == "strong" and hits[0]["relevance"] == 1.0
    assert all(h["band"] in ("strong", "weak", "none") and 0 <= h["relevance"] <= 1 for h in hits)


def test_threshold_keeps_results_by_relevance_and_says_when_none_is_strong() -> None:
    store = str(config.DEMO_STORE)
    every = json.loads(clip_search("search", store, "a red star", "--top-k", "40", "--json").stdout)
    auto = json.loads(clip_search("search", store, "a red star", "--top-k", "40", "--threshold", "auto", "--json").stdout)
    assert [h["id"] for h in auto] == [h["id"] for h in every if h["band"] != "none"] and len(auto) < len(every)
    strict = json.loads(clip_search("search", store, "a red star", "--top-k", "40", "--threshold", "0.95", "--json").stdout)
    assert strict and all(h["relevance"] >= 0.95 for h in strict) and len(strict) < len(auto)
    bad = clip_search("search", store, "a red star", "--threshold", "1.5")
    assert bad.returncode == 2 and "--threshold: expected 'auto' or a number from 0 to 1, got '1.5'" in bad.stderr


def test_search_by_image_prints_a_table(folder_store: Path, photo_dir: Path) -> None:
    result = clip_search("search", str(folder_store), "--image", str(photo_dir / "jpg" / "red-circle.jpg"), "--top-k", "2")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split()
    assert first[0] == "1" and first[2].endswith("%") and first[3] in ("strong", "weak", "none") and first[4].endswith("jpg/red-circle.jpg")


@pytest.mark.parametrize(
    "args, message",
    [
        (("search", "/no/such/store", "a cat"), "no embedding store at /no/such/store"),
        (("search", str(config.DEMO_STORE), "   "), "the query is empty"),
        (("search", str(config.DEMO_STORE), "a cat", "--model", "openai/clip-vit-base-patch32"), "was made by ../../models/demo-clip, not openai/clip-vit-base-patch32"),
        (("search", str(config.DEMO_STORE), "--image", "/no/such.jpg"), "cannot read query image /no/such.jpg"),
        (("search", str(config.DEMO_STORE), "a cat", "--labels", " , "), "--labels is empty"),
        (("precompute", str(config.DEMO_STORE / "images"), "--out", "/tmp/clip-search-never", "--model", "no-such-org/no-such-clip"), "cannot load CLIP model id 'no-such-org/no-such-clip'"),
        (("precompute", "/no/such/folder", "--out", "/tmp/clip-search-never"), "no such folder, file or dataset: /no/such/folder"),
    ],
)
def test_expected_failures_are_one_line_and_exit_1(args: tuple[str, ...], message: str) -> None:
    result = clip_search(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("clip-search")]) == 1


def test_scripts_are_the_same_commands(tiny_clip: Path, photo_dir: Path, tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "CLIP_SEARCH_CACHE": os.environ["CLIP_SEARCH_CACHE"]}
    built = subprocess.run(
        [sys.executable, "scripts/precompute.py", str(photo_dir), "--out", str(tmp_path / "s"), "--model", str(tiny_clip), "--text-model", "none", "--workers", "0", "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert "16 images embedded, 0 skipped" in built.stdout
    found = subprocess.run([sys.executable, "scripts/search.py", str(tmp_path / "s"), "a red circle", "--top-k", "3", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 3


def test_where_filters_before_top_k() -> None:
    result = clip_search("search", str(config.DEMO_STORE), "a shape", "--top-k", "20", "--where", "color == red", "--where", "shape = star", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 20 or 0 < len(hits) < 20
    from clip_search.store import EmbeddingStore

    store = EmbeddingStore.open(config.DEMO_STORE)
    table = store.metadata.to_pydict()
    red_stars = sum(1 for c, s in zip(table["color"], table["shape"]) if c == "red" and s == "star")
    assert len(hits) == min(20, red_stars)
    rows = {i: (c, s) for i, c, s in zip(table["id"], table["color"], table["shape"])}
    assert all(rows[h["id"]] == ("red", "star") for h in hits)


def test_a_bad_filter_is_one_line() -> None:
    result = clip_search("search", str(config.DEMO_STORE), "a shape", "--where", "colour == red")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "where: the store has no column 'colour'; its columns are: id, " in result.stderr


def test_index_is_built_measured_used_and_refused_when_stale(folder_store: Path, tmp_path: Path) -> None:
    from tests.conftest import copy_store

    store = copy_store(folder_store, tmp_path / "store")
    built = clip_search("index", str(store), "--kind", "hnsw")
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith(f"indexed {store}: hnsw") and "recall@10" in built.stdout
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["index"]["kind"] == "hnsw" and 0 <= manifest["index"]["recall_at_10"] <= 1
    assert all((store / name).is_file() for name in manifest["index"]["files"])
    exact = json.loads(clip_search("search", str(store), "a red circle", "--top-k", "16", "--exact", "--json").stdout)
    approximate = json.loads(clip_search("search", str(store), "a red circle", "--top-k", "16", "--json").stdout)
    assert sorted(h["id"] for h in approximate) == sorted(h["id"] for h in exact)  # 16 of 16: every row either way

    manifest["revision"] = "rows-changed-since"
    (store / "manifest.json").write_text(json.dumps(manifest))
    stale = clip_search("search", str(store), "a red circle")
    assert stale.returncode == 1 and "Traceback" not in stale.stderr
    assert f"the hnsw index in {store} was built for other rows than the store holds now; rebuild it with `clip-search index {store}`" in stale.stderr
    assert clip_search("search", str(store), "a red circle", "--exact").returncode == 0

    (store / manifest["index"]["files"][0]).unlink()
    manifest["revision"] = manifest["index"]["store_revision"]
    (store / "manifest.json").write_text(json.dumps(manifest))
    missing = clip_search("search", str(store), "a red circle")
    assert missing.returncode == 1 and f"{store / manifest['index']['files'][0]}, named by the index in manifest.json, is missing" in missing.stderr


def test_text_output_keeps_one_line_per_result(tmp_path: Path, tiny_clip: Path) -> None:
    from tests.conftest import draw_photo

    folder = tmp_path / "odd"
    folder.mkdir()
    draw_photo("red", "circle").save(folder / "two\nlines.png")
    draw_photo("blue", "square").save(folder / "plain.png")
    assert clip_search("precompute", str(folder), "--out", str(tmp_path / "s"), "--model", str(tiny_clip), "--text-model", "none", "--workers", "0", "--no-progress").returncode == 0
    result = clip_search("search", str(tmp_path / "s"), "a red circle", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and any(line.endswith("two\\nlines.png") for line in lines)


@pytest.mark.parametrize("bad", ["nan", "zero"])
def test_a_damaged_matrix_is_refused_never_printed_as_nan(folder_store: Path, tmp_path: Path, bad: str) -> None:
    import numpy as np

    from tests.conftest import copy_store

    store = copy_store(folder_store, tmp_path / "store")
    matrix = np.load(store / "embeddings.npy")
    matrix[7] = np.nan if bad == "nan" else 0
    np.save(store / "embeddings.npy", matrix)
    result = clip_search("search", str(store), "a red circle", "--json")
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert f"{store / 'embeddings.npy'}: row 7 " in result.stderr


def test_precompute_says_which_query_languages_the_store_supports(tmp_path: Path) -> None:
    from tests.conftest import draw_photo

    folder = tmp_path / "photos"
    folder.mkdir()
    draw_photo("red", "circle").save(folder / "red.png")
    draw_photo("blue", "square").save(folder / "blue.png")
    common = ("--model", str(config.DEMO_CLIP), "--workers", "0", "--no-progress")
    english = clip_search("precompute", str(folder), "--out", str(tmp_path / "en"), *common)
    assert english.returncode == 0, english.stderr
    assert f"queries: English (CLIP's own text encoder); no multilingual student is known for {config.DEMO_CLIP}" in english.stdout
    student = clip_search("precompute", str(folder), "--out", str(tmp_path / "multi"), *common, "--text-model", str(config.DEMO_STUDENT))
    assert student.returncode == 0, student.stderr
    assert f"queries: en, de, es, fr, ru, zh (multilingual student {config.DEMO_STUDENT})" in student.stdout


def test_an_unreachable_hub_fails_in_one_line_after_bounded_tries(tmp_path: Path) -> None:
    import socket
    import time

    with socket.socket() as probe:  # a loopback port nobody listens on: the hub is "down", nothing leaves the machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_DISABLE_TELEMETRY": "1", "CLIP_SEARCH_CACHE": str(tmp_path / "cache")}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "clip_search.cli", "precompute", str(config.DEMO_STORE / "images"), "--out", str(tmp_path / "s"), "--model", "no-such-org/no-such-clip"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"cannot reach the Hugging Face hub at http://127.0.0.1:{port} to fetch CLIP model 'no-such-org/no-such-clip'" in result.stderr
    assert "3 tries): pass a local model folder" in result.stderr and "Retrying" not in result.stderr
    assert time.perf_counter() - started < 120  # the libraries' own retries took minutes on a loaded machine

