"""Image-encoder backends: equal to torch within each one's tolerance, exported once and keyed by the weights,
usable by precompute, and refused in one line when unknown or not installed."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_search.clip_model import ClipEncoder
from clip_search.config import CPU_IMAGE_BACKEND, IMAGE_BACKENDS
from clip_search.errors import ModelLoadError, StoreError
from clip_search.precompute import precompute
from clip_search.store import EmbeddingStore
from clip_search import vision_backends
from clip_search.vision_backends import cached_vision_export, export_image_encoder, load_image_encoder, resolve_backend

EXPORTED = [b for b in IMAGE_BACKENDS if b != "torch"]
# The tolerance each backend is held to on the tiny CLIP: fp32 paths the product bar, int8 a floor it can miss.
FLOOR = {"onnx": 0.999, "openvino": 0.999, "onnx-int8": 0.995}


def _installed(backend: str) -> bool:
    try:
        resolve_backend(backend, "cpu")
    except ModelLoadError:
        return False
    return True


BACKEND_PARAMS = [pytest.param(b, marks=pytest.mark.skipif(not _installed(b), reason=f"{b} runtime not installed")) for b in EXPORTED]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vision-cache")


@pytest.fixture(scope="module")
def clip(tiny_clip: Path) -> ClipEncoder:
    return ClipEncoder.load(str(tiny_clip), device="cpu")


def _pixels(clip: ClipEncoder, n: int, seed: int = 1) -> torch.Tensor:
    size = clip.model.config.vision_config.image_size
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 1, (n, 3, size, size)).astype(np.float32))


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_backend_equals_torch(clip: ClipEncoder, cache: Path, backend: str) -> None:
    encoder = load_image_encoder(clip, backend, cache_dir=cache)
    pixels = _pixels(clip, 10)
    want = clip.encode_pixels(pixels)
    got = encoder.encode_pixels(pixels)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * want).sum(1).min() >= FLOOR[backend]
    single = encoder.encode_pixels(pixels[:1])  # another batch size through the same graph
    assert (single * want[:1]).sum() >= FLOOR[backend]
    assert encoder.encode_pixels(pixels[:0]).shape == (0, clip.dim)


def test_torch_backend_is_the_clip_itself(clip: ClipEncoder, cache: Path) -> None:
    assert load_image_encoder(clip, "torch", cache_dir=cache) is clip


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_second_load_exports_nothing(clip: ClipEncoder, cache: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = export_image_encoder(clip, backend, cache_dir=cache)
    assert cached_vision_export(clip.model_id, backend, cache_dir=cache) == folder

    def no_export(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("exported again although the export is cached")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    monkeypatch.setattr(vision_backends, "_MAKERS", {})  # neither quantised nor converted again
    encoder = load_image_encoder(clip, backend, cache_dir=cache)
    assert encoder.folder == folder


def test_exports_are_keyed_by_weights_and_backend(tiny_clip: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tiny_clip, tmp_path / "clip"))
    cache = tmp_path / "cache"
    clip = ClipEncoder.load(str(model), device="cpu")
    assert cached_vision_export(str(model), "onnx", cache_dir=cache) is None
    first = export_image_encoder(clip, "onnx", cache_dir=cache)
    assert cached_vision_export(str(model), "onnx-int8", cache_dir=cache) is None  # the backend is part of the key
    weights = next(model.glob("*.safetensors"))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # "touching the weights"
    assert cached_vision_export(str(model), "onnx", cache_dir=cache) is None
    again = export_image_encoder(ClipEncoder.load(str(model), device="cpu"), "onnx", cache_dir=cache)
    assert again != first and again.is_dir()


def test_an_export_below_its_floor_is_refused_and_not_kept(tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Path(shutil.copytree(tiny_clip, tmp_path / "clip"))
    cache = tmp_path / "cache"
    clip = ClipEncoder.load(str(model), device="cpu")
    monkeypatch.setitem(vision_backends.MIN_COSINE, "onnx-int8", 1.000001)  # no int8 export reaches this
    with pytest.raises(ModelLoadError, match="does not match torch"):
        export_image_encoder(clip, "onnx-int8", cache_dir=cache)
    assert cached_vision_export(str(model), "onnx-int8", cache_dir=cache) is None
    assert not list((cache / "exports").glob(".tmp-*"))


def _build(photo_dir: Path, out: Path, tiny_clip: Path, **options: object) -> object:
    return precompute(str(photo_dir), out, model=str(tiny_clip), text_model=None, batch_size=4, num_workers=0, progress=False, **options)


@pytest.fixture(scope="module")
def torch_store(tiny_clip: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torch") / "store"
    _build(photo_dir, out, tiny_clip, backend="torch")
    return out


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_precompute_with_each_backend(tiny_clip: Path, photo_dir: Path, torch_store: Path, tmp_path: Path, backend: str) -> None:
    out = tmp_path / backend
    report = _build(photo_dir, out, tiny_clip, backend=backend)
    store, reference = EmbeddingStore.open(out), EmbeddingStore.open(torch_store)
    assert store.manifest.model.backend == backend and reference.manifest.model.backend == "torch"
    assert report.count == len(reference) == 16
    assert store.metadata.column("id").to_pylist() == reference.metadata.column("id").to_pylist()
    got, want = store.vectors(range(16)), reference.vectors(range(16))
    assert (got * want).sum(1).min() >= FLOOR[backend] - 2e-3  # float16 storage


def test_auto_is_the_cpu_default_in_float32_else_torch() -> None:
    assert resolve_backend("auto", "cpu") == CPU_IMAGE_BACKEND
    assert resolve_backend("auto", "cpu", "bfloat16") == "torch"
    assert resolve_backend("torch", "cpu", "bfloat16") == "torch"


def test_unknown_backend_is_one_line(tiny_clip: Path, photo_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        precompute(str(photo_dir), tmp_path / "s", model=str(tiny_clip), text_model=None, num_workers=0, progress=False, backend="tensorrt")
    assert "unknown image backend 'tensorrt'" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "s.partial").exists()  # refused before any work


def test_backends_refuse_what_they_cannot_run() -> None:
    with pytest.raises(ModelLoadError, match="CPU only"):
        resolve_backend("onnx", "cuda")
    with pytest.raises(ModelLoadError, match="precision"):
        resolve_backend("onnx-int8", "cpu", "bfloat16")


@pytest.mark.parametrize(("backend", "module"), [("openvino", "openvino"), ("onnx-int8", "onnxruntime")])
def test_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch, backend: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ModelLoadError) as err:
        resolve_backend(backend, "cpu")
    assert f"needs the {module} package: pip install" in str(err.value) and "\n" not in str(err.value)


def test_cli_refuses_an_unknown_backend(capsys: pytest.CaptureFixture[str]) -> None:
    from clip_search.cli import main

    with pytest.raises(SystemExit):
        main(["precompute", "somewhere", "--out", "x", "--backend", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_cli_and_library_default_to_auto() -> None:
    import inspect

    from clip_search.cli import build_parser
    from clip_search.precompute import precompute

    assert build_parser().parse_args(["precompute", "somewhere", "--out", "x"]).backend == "auto"
    assert inspect.signature(precompute).parameters["backend"].default == "auto"


def test_an_update_keeps_the_backend_of_the_store(tiny_clip: Path, photo_dir: Path, torch_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(torch_store, store)
    report = _build(photo_dir, store, tiny_clip)  # "auto" takes the store's backend, not the CPU default
    assert report.embedded == 0 and EmbeddingStore.open(store).manifest.model.backend == "torch"
    with pytest.raises(StoreError, match=r"was embedded with image backend 'torch': update it with backend 'torch' \(or 'auto'\), or allow overwrite"):
        _build(photo_dir, store, tiny_clip, backend=CPU_IMAGE_BACKEND)
    _build(photo_dir, store, tiny_clip, backend=CPU_IMAGE_BACKEND, overwrite=True)
    assert EmbeddingStore.open(store).manifest.model.backend == CPU_IMAGE_BACKEND


def test_a_store_without_a_recorded_backend_was_made_by_torch(torch_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(torch_store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    del manifest["model"]["backend"]
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert EmbeddingStore.open(store).manifest.model.backend == "torch"
    manifest["model"]["backend"] = "tensorrt"
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="field 'model.backend' must be one of torch, onnx, onnx-int8, openvino"):
        EmbeddingStore.open(store)
