"""ONNX text encoders: equal to torch, cached by the weights they came from, importable without torch, loud when damaged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clip_search.config import DEMO_CLIP, DEMO_STUDENT
from clip_search.errors import ModelLoadError
from clip_search.onnx_export import export_text_encoder
from clip_search.config import default_cache_dir
from clip_search.onnx_text import INFO_FILE, ONNX_FILE, OnnxTextEncoder, cached_export, export_key

TEXTS = [
    "a red circle",
    "two blue squares on the left",
    "ein roter Kreis auf grauem Grund",
    "红色的圆形",
    "красный круг",
    "a photo of a cat " * 300,  # 5,100 characters: truncated
    "?!...,;:",
    "",
    "a dog",
]
HEAVY = ("torch", "transformers", "sentence_transformers")
MODELS = ["tiny_clip", "tiny_student", "demo_clip", "demo_student"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def model(request: pytest.FixtureRequest) -> tuple[Path, str]:
    """(model folder, export kind) for the parametrised name."""
    name = request.param
    if name == "demo_clip":
        return DEMO_CLIP, "clip-text"
    if name == "demo_student":
        return DEMO_STUDENT, "student"
    return request.getfixturevalue(name), "clip-text" if name == "tiny_clip" else "student"


def torch_encoder(path: Path, kind: str):
    if kind == "clip-text":
        from clip_search.clip_model import ClipEncoder

        return ClipEncoder.load(str(path), device="cpu", dtype="float32")
    from clip_search.text_student import StudentTextEncoder

    return StudentTextEncoder.load(str(path), device="cpu")


@pytest.mark.parametrize("model", MODELS, indirect=True)
def test_onnx_equals_torch(model: tuple[Path, str], cache: Path) -> None:
    path, kind = model
    onnx = OnnxTextEncoder.load(export_text_encoder(str(path), kind, cache_dir=cache), str(path))
    expected = torch_encoder(path, kind).encode_texts(TEXTS)
    batched = onnx.encode_texts(TEXTS)
    single = np.concatenate([onnx.encode_texts([t]) for t in TEXTS])
    small_batches = onnx.encode_texts(TEXTS, batch_size=3)

    assert batched.shape == (len(TEXTS), onnx.dim) == expected.shape
    assert batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    for got in (batched, single, small_batches):
        cosines = (got * expected).sum(1)
        assert cosines.min() >= 0.9999, dict(zip(TEXTS, cosines.round(6)))
    np.testing.assert_allclose(single, batched, atol=1e-5)
    np.testing.assert_allclose(small_batches, batched, atol=1e-5)


@pytest.mark.parametrize("model", MODELS, indirect=True)
def test_tokenisation_equals_original(model: tuple[Path, str], cache: Path) -> None:
    path, kind = model
    onnx = OnnxTextEncoder.load(export_text_encoder(str(path), kind, cache_dir=cache), str(path))
    enc = torch_encoder(path, kind)
    if kind == "clip-text":
        tokenizer = enc.processor.tokenizer
        max_length = min(tokenizer.model_max_length, enc.model.config.text_config.max_position_embeddings)
        want = tokenizer(TEXTS, truncation=True, max_length=max_length)["input_ids"]
    else:  # what SentenceTransformer.encode feeds its transformer, padding removed
        features = enc.model.preprocess(TEXTS)
        want = [row[mask.bool()].tolist() for row, mask in zip(features["input_ids"], features["attention_mask"])]
    got = onnx.token_ids(TEXTS)
    assert got == [list(w) for w in want]
    long_ids = got[TEXTS.index("a photo of a cat " * 300)]
    assert len(long_ids) == onnx.info.max_length == max(len(ids) for ids in got)  # the long text is truncated ...
    assert long_ids[-1] == got[0][-1]  # ... and keeps its EOS / [SEP] last


def test_empty_input(tiny_clip: Path, cache: Path) -> None:
    onnx = OnnxTextEncoder.load(export_text_encoder(str(tiny_clip), "clip-text", cache_dir=cache), "tiny")
    assert onnx.encode_texts([]).shape == (0, 16)
    assert onnx.dim == 16 and onnx.model_id == "tiny"


def test_cached_export_follows_the_weights(tiny_student: Path, tmp_path: Path) -> None:
    model = tmp_path / "student"
    shutil.copytree(tiny_student, model)
    cache = tmp_path / "cache"

    assert cached_export(str(model), "student", cache_dir=cache) is None
    folder = export_text_encoder(str(model), "student", cache_dir=cache)
    assert folder.parent == cache / "exports" and (folder / INFO_FILE).is_file()
    assert cached_export(str(model), "student", cache_dir=cache) == folder
    assert cached_export(str(model), "clip-text", cache_dir=cache) is None  # the kind is part of the key
    assert export_text_encoder(str(model), "student", cache_dir=cache) == folder  # no second export
    assert [p.name for p in (cache / "exports").iterdir()] == [folder.name]  # no temporary folder left behind

    weights = model / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # `touch`: same bytes, new mtime
    assert cached_export(str(model), "student", cache_dir=cache) is None
    again = export_text_encoder(str(model), "student", cache_dir=cache)
    assert again != folder and cached_export(str(model), "student", cache_dir=cache) == again

    (model / "2_Dense" / "model.safetensors").write_bytes((model / "2_Dense" / "model.safetensors").read_bytes() + b"\0")
    assert cached_export(str(model), "student", cache_dir=cache) is None  # a weight file in a module folder counts too


def test_hub_ids_are_keyed_by_cached_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--clip"
    assert export_key("org/clip", "clip-text") is None  # not in the cache: no key, no network
    assert cached_export("org/clip", "clip-text", cache_dir=tmp_path / "cache") is None

    first, second = "a" * 40, "b" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "snapshots" / first).mkdir(parents=True)
    (repo / "snapshots" / second).mkdir(parents=True)
    (repo / "refs" / "main").write_text(first)
    key, source = export_key("org/clip", "clip-text")
    assert source == {"repo": "org/clip", "commit": first} and key.startswith("clip-text-clip-")
    assert export_key("org/clip", "clip-text", revision=first)[0] == key
    assert export_key("org/clip", "clip-text", revision=second)[0] != key
    assert export_key("org/clip", "clip-text", revision="v2") is None  # a tag the cache has never resolved
    (repo / "refs" / "main").write_text(second)  # the branch moved on
    assert export_key("org/clip", "clip-text")[0] == export_key("org/clip", "clip-text", revision=second)[0]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLIP_SEARCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "clip-search"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "clip-search"
    monkeypatch.setenv("CLIP_SEARCH_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_runtime_imports_no_torch(tiny_clip: Path, cache: Path) -> None:
    folder = export_text_encoder(str(tiny_clip), "clip-text", cache_dir=cache)
    script = textwrap.dedent(
        f"""
        import sys
        from clip_search.onnx_text import OnnxTextEncoder, cached_export
        folder = cached_export({str(tiny_clip)!r}, "clip-text", cache_dir={str(cache)!r})
        assert str(folder) == {str(folder)!r}, folder
        assert cached_export("org/not-cached", "clip-text", cache_dir={str(cache)!r}) is None
        out = OnnxTextEncoder.load(folder, "tiny").encode_texts(["a red circle", "ein roter Kreis"])
        assert out.shape == (2, 16)
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_damaged_export_names_the_file(tiny_clip: Path, cache: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "export"
    shutil.copytree(export_text_encoder(str(tiny_clip), "clip-text", cache_dir=cache), damaged)

    (damaged / ONNX_FILE).write_bytes(b"not a protobuf")
    with pytest.raises(ModelLoadError, match=str(damaged / ONNX_FILE)):
        OnnxTextEncoder.load(damaged, "tiny")

    (damaged / ONNX_FILE).unlink()
    with pytest.raises(ModelLoadError, match=f"{damaged / ONNX_FILE} is missing"):
        OnnxTextEncoder.load(damaged, "tiny")

    info = json.loads((damaged / INFO_FILE).read_text())
    (damaged / INFO_FILE).write_text(json.dumps(dict(info, format=99)))
    with pytest.raises(ModelLoadError, match=str(damaged / INFO_FILE)):
        OnnxTextEncoder.load(damaged, "tiny")

    (damaged / INFO_FILE).unlink()
    with pytest.raises(ModelLoadError, match=f"{damaged / INFO_FILE} is missing"):
        OnnxTextEncoder.load(damaged, "tiny")


def test_single_queries_run_unpadded(tiny_clip: Path, cache: Path) -> None:
    onnx = OnnxTextEncoder.load(export_text_encoder(str(tiny_clip), "clip-text", cache_dir=cache), "tiny")
    shapes = []
    run = onnx.session.run
    onnx.session = type("Spy", (), {"run": lambda self, names, feed: shapes.append(feed["input_ids"].shape) or run(names, feed)})()
    texts = ["a red circle", "two blue squares on the left and a photo of a cat"]
    onnx.encode_texts(texts[:1])
    onnx.encode_texts(texts)
    lengths = [len(ids) for ids in onnx.token_ids(texts)]
    assert shapes == [(1, lengths[0]), (2, max(lengths))]


def test_an_export_that_does_not_match_is_not_kept(tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clip_search.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "MIN_COSINE", 1.5)  # no export can reach it
    with pytest.raises(ModelLoadError, match="does not match torch"):
        export_text_encoder(str(tiny_clip), "clip-text", cache_dir=tmp_path)
    assert list((tmp_path / "exports").iterdir()) == []
    assert cached_export(str(tiny_clip), "clip-text", cache_dir=tmp_path) is None


def test_sessions_do_not_spin() -> None:
    from clip_search.onnx_text import session_options

    options = session_options(3)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
