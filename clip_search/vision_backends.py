"""Image-encoder backends for precompute: torch as loaded, or a cached ONNX export run by onnxruntime or OpenVINO.

Every backend turns preprocessed pixels (N×3×H×W, the checkpoint's processor's output) into N×D L2-normalised
float32 embeddings, as `ClipEncoder.encode_pixels` does; precompute calls `encode_pixels` and nothing else.

- `torch`: the `ClipEncoder` itself (any device and dtype).
- `onnx`: the vision tower (`get_image_features().pooler_output`) exported to ONNX, float32, run by onnxruntime.
- `onnx-int8`: that export with its MatMul/Gemm weights quantised to int8 (onnxruntime's dynamic quantisation:
  activations quantised per batch at run time; data-free, so the export depends on the weights alone).
- `openvino`: the float32 ONNX export converted to OpenVINO IR (float32 weights), run by OpenVINO's CPU plugin.

Exports live in the text exports' cache (`clip_search.onnx_text.exports_root`), one folder per (weights, backend,
dtype): `clip-vision-<backend>-<model>-<hash>/` holding the model file(s) and `export.json` (`VisionExportInfo`,
read and written only here). The key is computed from what `onnx_text.export_key` computes the text exports' key
from (a local folder's files, or the hub commit), so touching the weights makes a new export. An export is made
once in a temporary folder, verified against torch (cosine per image >= the backend's floor), and only then
renamed into place; a second load finds it and exports nothing. Runtimes are imported only when used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clip_search.config import AUTO_IMAGE_BACKEND, CPU_IMAGE_BACKEND, IMAGE_BACKENDS, ONNX_BACKEND, ONNX_INT8_BACKEND, OPENVINO_BACKEND, TORCH_BACKEND
from clip_search.errors import ModelLoadError, one_line
from clip_search.onnx_text import _cpu_count, export_key, exports_root, publish_export, session_options
from clip_search.vectors import l2_normalise

log = logging.getLogger(__name__)

VISION_EXPORT_FORMAT = 1  # bump when the layout or the graph's contract changes: old exports then get new keys
INFO_FILE = "export.json"
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "embedding"
OPSET = 17
# The lowest cosine to torch float32 an export may have on the verification pixels, per image.
MIN_COSINE = {ONNX_BACKEND: 0.999, OPENVINO_BACKEND: 0.999, ONNX_INT8_BACKEND: 0.99}
_FILES = {ONNX_BACKEND: "model.onnx", ONNX_INT8_BACKEND: "model.onnx", OPENVINO_BACKEND: "model.xml"}
_DTYPES = {ONNX_BACKEND: "float32", ONNX_INT8_BACKEND: "int8", OPENVINO_BACKEND: "float32"}
_PACKAGES = {ONNX_BACKEND: ("onnxruntime", "onnxruntime"), ONNX_INT8_BACKEND: ("onnxruntime", "onnxruntime"), OPENVINO_BACKEND: ("openvino", "openvino==2026.4.0")}
_VERIFY_BATCH = 4
_VERIFY_SEED = 0


class ImageEncoder(Protocol):
    """What precompute needs of an image encoder."""

    def encode_pixels(self, pixel_values: Any) -> np.ndarray:
        """Image embeddings for preprocessed pixels: N×D, L2-normalised, float32."""
        ...


@dataclass(frozen=True)
class VisionExportInfo:
    """What a vision export's `export.json` records."""

    backend: str
    dtype: str
    model_ref: str
    revision: str | None
    source: dict[str, Any]  # what the key was computed from (model folder files or hub commit)
    dim: int
    image_size: int
    min_cosine: float | None = None  # the lowest cosine to torch float32 measured when the export was verified
    versions: dict[str, str] = field(default_factory=dict)
    format: int = VISION_EXPORT_FORMAT

    def write(self, folder: Path) -> None:
        """Write `export.json` into `folder`."""
        (Path(folder) / INFO_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> VisionExportInfo:
        """Read `export.json` in `folder`; a missing, unreadable or foreign file raises ModelLoadError."""
        path = Path(folder) / INFO_FILE
        try:
            info = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"image-encoder export file {path} is unreadable ({one_line(exc)}); delete {folder} to export again") from None
        if info.format != VISION_EXPORT_FORMAT or info.backend not in _FILES:
            raise ModelLoadError(f"{path} is not a format-{VISION_EXPORT_FORMAT} image-encoder export; delete {folder} to export again")
        return info


def resolve_backend(backend: str | None, device: str | None = None, dtype: str | None = None) -> str:
    """The backend to run: the one asked for, or for "auto" the CPU default on CPU in float32, else torch."""
    backend = backend or AUTO_IMAGE_BACKEND
    if backend not in (AUTO_IMAGE_BACKEND, *IMAGE_BACKENDS):
        raise ModelLoadError(f"unknown image backend {backend!r}: choose one of {', '.join((AUTO_IMAGE_BACKEND, *IMAGE_BACKENDS))}")
    on_cpu = device in (None, "", "auto", "cpu") and (device == "cpu" or not _cuda_available())
    if backend == AUTO_IMAGE_BACKEND:
        return CPU_IMAGE_BACKEND if on_cpu and dtype in (None, "", "auto", "float32") else TORCH_BACKEND
    if backend != TORCH_BACKEND:
        if not on_cpu:
            raise ModelLoadError(f"image backend {backend!r} runs on the CPU only, not on device {device or 'cuda'!r}: use backend 'torch' there")
        if dtype not in (None, "", "auto", "float32"):
            raise ModelLoadError(f"image backend {backend!r} chooses its own precision; dtype {dtype!r} applies to backend 'torch' only")
        _require(backend)
    return backend


def load_image_encoder(clip: Any, backend: str | None = None, *, cache_dir: Path | None = None, threads: int | None = None) -> ImageEncoder:
    """The image encoder of `clip` (a loaded `ClipEncoder`) on `backend`, exporting it once into the cache if needed.

    "torch" is `clip` itself; the others run a verified export from the cache (made now if missing, which
    needs the torch model `clip` holds). `threads` is the runtime's thread count (default: the usable cores).
    """
    backend = resolve_backend(backend, str(clip.device), _dtype_name(clip))
    if backend == TORCH_BACKEND:
        return clip
    folder = export_image_encoder(clip, backend, cache_dir=cache_dir)
    return _open(folder, backend, threads)


def vision_export_key(model_ref: str, backend: str, *, revision: str | None = None) -> tuple[str, dict[str, Any]] | None:
    """The cache key of an export of `model_ref`'s image encoder for `backend`, and what it was computed from.

    None for a hub id that is not in the local Hugging Face cache. The weights are identified as the text exports
    identify them (`onnx_text.export_key`): a local folder by its files, a hub id by its commit.
    """
    keyed = export_key(model_ref, "clip-text", revision=revision)
    if keyed is None:
        return None
    _, source = keyed
    blob = json.dumps({"format": VISION_EXPORT_FORMAT, "backend": backend, "dtype": _DTYPES[backend], "source": source}, sort_keys=True).encode()
    name = Path(source["folder"]).name if "folder" in source else str(source["repo"]).rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40] or "model"
    return f"clip-vision-{backend}-{slug}-{hashlib.sha256(blob).hexdigest()[:16]}", source


def cached_vision_export(model_ref: str, backend: str, *, revision: str | None = None, cache_dir: Path | None = None) -> Path | None:
    """The folder of a finished export of `model_ref`'s image encoder for `backend`, or None when there is none yet."""
    keyed = vision_export_key(model_ref, backend, revision=revision)
    if keyed is None:
        return None
    folder = exports_root(cache_dir) / keyed[0]
    return folder if (folder / INFO_FILE).is_file() else None


def export_image_encoder(clip: Any, backend: str, *, cache_dir: Path | None = None) -> Path:
    """The folder of `clip`'s verified image-encoder export for `backend` ("onnx", "onnx-int8", "openvino").

    Made once: an existing export for the same weights is returned as it is. The int8 and OpenVINO exports are
    made from the float32 ONNX export (made first when missing, and kept).
    """
    if backend not in _FILES:
        raise ModelLoadError(f"image backend {backend!r} has no export: choose one of {', '.join(_FILES)}")
    found = cached_vision_export(clip.model_id, backend, revision=clip.revision, cache_dir=cache_dir)
    if found is not None:
        return found
    _require(backend)
    keyed = vision_export_key(clip.model_id, backend, revision=clip.revision)
    if keyed is None:
        raise ModelLoadError(f"cannot find {clip.model_id!r} (revision {clip.revision or 'main'}) in the Hugging Face cache to key its export")
    key, source = keyed
    base = export_image_encoder(clip, ONNX_BACKEND, cache_dir=cache_dir) if backend != ONNX_BACKEND else None
    root = exports_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    os.chmod(tmp, 0o755)
    try:
        size = int(clip.model.config.vision_config.image_size)
        info = VisionExportInfo(backend, _DTYPES[backend], clip.model_id, clip.revision, source, clip.dim, size, versions=_versions())
        _MAKERS[backend](clip, tmp / _FILES[backend], base)
        info.write(tmp)
        min_cos = _verify(clip, tmp, backend, size)
        replace(info, min_cosine=min_cos).write(tmp)
        if publish_export(tmp, final):
            log.info("exported the image encoder of %s for %s to %s (min cosine to torch %.6f)", clip.model_id, backend, final, min_cos)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class _ExportedImageEncoder:
    """An exported image tower run on the CPU: N×D float32, L2-normalised; subclasses run one batch."""

    info: VisionExportInfo

    def encode_pixels(self, pixel_values: Any) -> np.ndarray:
        """Image embeddings for preprocessed pixels (a torch tensor or an array): N×D, L2-normalised, float32."""
        pixels = np.ascontiguousarray(_numpy(pixel_values), dtype=np.float32)
        if len(pixels) == 0:
            return np.zeros((0, self.info.dim), np.float32)
        return l2_normalise(self._run(pixels))

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxImageEncoder(_ExportedImageEncoder):
    """An image encoder run by onnxruntime on the CPU."""

    def __init__(self, session: Any, info: VisionExportInfo, folder: Path) -> None:
        self.session = session
        self.info = info
        self.folder = folder

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]


class OpenVinoImageEncoder(_ExportedImageEncoder):
    """An image encoder run by OpenVINO's CPU plugin."""

    def __init__(self, compiled: Any, info: VisionExportInfo, folder: Path) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.info = info
        self.folder = folder

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        return np.array(self.request.infer({0: pixels})[0])


def _open(folder: Path, backend: str, threads: int | None) -> ImageEncoder:
    info = VisionExportInfo.read(folder)
    path = folder / _FILES[backend]
    if not path.is_file():
        raise ModelLoadError(f"image-encoder export {folder} is incomplete: {path} is missing; delete {folder} to export again")
    threads = threads or _cpu_count()
    try:
        if backend == OPENVINO_BACKEND:
            import openvino as ov

            core = ov.Core()
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
            return OpenVinoImageEncoder(core.compile_model(core.read_model(str(path)), "CPU", config), info, folder)
        import onnxruntime as ort

        return OnnxImageEncoder(ort.InferenceSession(str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]), info, folder)
    except Exception as exc:  # the runtimes' load errors derive from Exception (or RuntimeError) only
        raise ModelLoadError(f"image-encoder export {path} cannot be loaded ({one_line(exc)}); delete {folder} to export again") from None


def _export_onnx(clip: Any, path: Path, _base: Path | None) -> None:
    import torch

    class Vision(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: Any) -> Any:
            return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    size = int(clip.model.config.vision_config.image_size)
    module = Vision(clip.model).eval()  # float32 on the CPU: resolve_backend refuses anything else
    sample = torch.zeros(2, 3, size, size, device=clip.device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow; the result is verified after
        torch.onnx.export(
            module, (sample,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, do_constant_folding=True,
        )


def _quantise_int8(_clip: Any, path: Path, base: Path | None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    assert base is not None
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a "run pre-processing first" hint on the root logger
    try:
        quantize_dynamic(str(base / _FILES[ONNX_BACKEND]), str(path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _convert_openvino(_clip: Any, path: Path, base: Path | None) -> None:
    import openvino as ov

    assert base is not None
    ov.save_model(ov.convert_model(str(base / _FILES[ONNX_BACKEND])), str(path), compress_to_fp16=False)


_MAKERS: dict[str, Callable[[Any, Path, Path | None], None]] = {ONNX_BACKEND: _export_onnx, ONNX_INT8_BACKEND: _quantise_int8, OPENVINO_BACKEND: _convert_openvino}


def _verify(clip: Any, folder: Path, backend: str, size: int) -> float:
    """The lowest per-image cosine of the export to torch on fixed pixels; below the backend's floor, refused."""
    rng = np.random.default_rng(_VERIFY_SEED)
    pixels = rng.normal(0, 1, size=(_VERIFY_BATCH, 3, size, size)).astype(np.float32)
    import torch

    expected = clip.encode_pixels(torch.from_numpy(pixels))
    encoder = _open(folder, backend, None)
    batched = (expected * encoder.encode_pixels(pixels)).sum(1)
    single = (expected[:1] * encoder.encode_pixels(pixels[:1])).sum(1)  # a batch of one: another shape through the graph
    worst = float(min(batched.min(), single.min()))
    if not worst >= MIN_COSINE[backend]:
        raise ModelLoadError(f"{backend} export of {clip.model_id!r} does not match torch: cosine {worst:.6f} < {MIN_COSINE[backend]}; the export was not kept")
    return worst


def _require(backend: str) -> None:
    module, package = _PACKAGES[backend]
    try:
        __import__(module)
    except ImportError:
        raise ModelLoadError(f"image backend {backend!r} needs the {module} package: pip install {package}") from None


def _numpy(pixels: Any) -> np.ndarray:
    return pixels.detach().cpu().float().numpy() if hasattr(pixels, "detach") else np.asarray(pixels)


def _dtype_name(clip: Any) -> str:
    return str(clip.dtype).removeprefix("torch.")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "onnx", "onnxruntime", "openvino"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
