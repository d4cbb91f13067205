"""Exporting text encoders to ONNX once (with torch), verified against torch, into the cache `onnx_text` reads.

torch, transformers and sentence_transformers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from clip_search.errors import ModelLoadError, one_line
from clip_search.hub import check_hub_model
from clip_search.onnx_text import (
    INPUT_NAMES,
    KINDS,
    ONNX_FILE,
    OUTPUT_NAME,
    TOKENIZER_FILE,
    ExportInfo,
    OnnxTextEncoder,
    cached_export,
    export_key,
    exports_root,
    publish_export,
)

log = logging.getLogger(__name__)

OPSET = 17
MIN_COSINE = 0.9999
# Checked after every export, one by one and as one padded batch: long (truncated), non-Latin, empty-ish.
VERIFY_TEXTS: tuple[str, ...] = (
    "a photo of a cat",
    "two dogs playing in the snow next to a red car",
    "ein rotes Auto in der Stadt",
    "горы под снегом",
    "夜晚的城市街道",
    "桜の木と青い空",
    "!!! ... ???",
    "",
    " ",
    "a very long query about a beach at sunset with people walking their dogs " * 60,
)


def export_text_encoder(model_ref: str, kind: str, *, revision: str | None = None, cache_dir: Path | None = None) -> Path:
    """Export the text encoder of `model_ref` to ONNX, verified, and return its folder in the export cache.

    kind "clip-text": a CLIP checkpoint's text tower, input_ids + attention_mask -> `get_text_features().pooler_output`
    (the projected embedding); kind "student": a sentence-transformers model, everything `SentenceTransformer.encode`
    computes (transformer, pooling, dense, ...). Batch and sequence axes are dynamic. The folder also holds the
    original tokenizer pipeline and its max length / truncation side / pad id, so the runtime tokenises exactly as
    the original. It is written to a temporary folder and renamed into place only after its outputs match torch
    (cosine >= MIN_COSINE per text, one by one and batched) and its token ids match the original tokenizer's;
    an export that does not match raises ModelLoadError and is not kept. An existing export is returned as is.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown export kind {kind!r}: choose one of {', '.join(KINDS)}")
    found = cached_export(model_ref, kind, revision=revision, cache_dir=cache_dir)
    if found is not None:
        return found

    import torch

    try:
        import onnx  # noqa: F401  torch's exporter writes the graph through it
    except ImportError:
        raise ModelLoadError("exporting a text encoder to ONNX needs the onnx package (see requirements.txt)") from None
    loaded = _load_clip_text(model_ref, revision) if kind == "clip-text" else _load_student(model_ref, revision)
    module, tokenizer, info_fields, reference = loaded
    keyed = export_key(model_ref, kind, revision=revision)  # after loading: a hub model is now in the HF cache
    if keyed is None:
        raise ModelLoadError(f"cannot find {model_ref!r} (revision {revision or 'main'}) in the Hugging Face cache after loading it")
    key, source = keyed

    root = exports_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private (0700); a finished export reads like any cache folder
    try:
        info = ExportInfo(kind=kind, model_ref=str(model_ref), revision=revision, source=source, opset=OPSET, versions=_versions(), **info_fields)
        _write_tokenizer(tokenizer, tmp / TOKENIZER_FILE)
        _export_onnx(module, tokenizer, tmp / ONNX_FILE, torch)
        info.write(tmp)
        min_cos = _verify(tmp, model_ref, tokenizer, info, reference)
        replace(info, min_cosine=min_cos).write(tmp)
        if publish_export(tmp, final):
            log.info("exported %s text encoder of %s to %s (min cosine to torch %.6f)", kind, model_ref, final, min_cos)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _load_clip_text(model_ref: str, revision: str | None) -> tuple[Any, Any, dict[str, Any], Callable[[Sequence[str]], np.ndarray]]:
    import torch

    from clip_search.clip_model import ClipEncoder

    enc = ClipEncoder.load(model_ref, revision=revision, device="cpu", dtype="float32")
    tokenizer = enc.processor.tokenizer
    text_config = enc.model.config.text_config
    if text_config.eos_token_id not in (tokenizer.eos_token_id, 2):
        # CLIP pools at the first position holding the config's eos id (2 is the legacy "highest id" rule). The export
        # reproduces torch either way; the mismatch is the checkpoint's, so it is reported, not refused.
        log.warning(
            "CLIP %r: text_config.eos_token_id is %s but its tokenizer's EOS is %s; text pooling reads the wrong position",
            model_ref, text_config.eos_token_id, tokenizer.eos_token_id,
        )
    max_length = min(int(tokenizer.model_max_length), int(text_config.max_position_embeddings))

    class ClipText(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    fields = dict(dim=enc.dim, max_length=max_length, pad_id=int(tokenizer.pad_token_id), truncation_side=tokenizer.truncation_side)
    return ClipText(enc.model).eval(), tokenizer, fields, enc.encode_texts


def _load_student(model_ref: str, revision: str | None) -> tuple[Any, Any, dict[str, Any], Callable[[Sequence[str]], np.ndarray]]:
    import torch
    from sentence_transformers import SentenceTransformer

    from clip_search.text_student import StudentTextEncoder

    cached_only = check_hub_model(model_ref, revision=revision, what="multilingual text model")
    try:
        st = SentenceTransformer(model_ref, revision=revision, device="cpu", local_files_only=cached_only)
    except (OSError, ValueError, KeyError) as exc:
        where = "local folder" if Path(model_ref).exists() else "model id"
        raise ModelLoadError(f"cannot load multilingual text {where} {model_ref!r}: {one_line(exc)}") from None
    st.eval()
    first = st[0]
    tokenizer = getattr(first, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"student {model_ref!r}: its first module has no fast (tokenizers) tokenizer, so it cannot run without transformers")
    if getattr(st, "default_prompt_name", None):
        raise ModelLoadError(f"student {model_ref!r} prepends the prompt {st.default_prompt_name!r} to every text; exporting prompts is not supported")
    with_type_ids = "token_type_ids" in tokenizer.model_input_names

    class StudentText(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if with_type_ids:  # one segment: all zeros, as the tokenizer returns for a single text
                features["token_type_ids"] = torch.zeros_like(input_ids)
            return self.model(features)["sentence_embedding"]

    enc = StudentTextEncoder(st, str(model_ref), torch.device("cpu"))
    fields = dict(dim=enc.dim, max_length=int(st.max_seq_length), pad_id=int(tokenizer.pad_token_id), truncation_side=tokenizer.truncation_side)
    return StudentText(st).eval(), tokenizer, fields, enc.encode_texts


def _write_tokenizer(tokenizer: Any, path: Path) -> None:
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy: the original stays as it was
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(path))


def _export_onnx(module: Any, tokenizer: Any, path: Path, torch: Any) -> None:
    # Trace with a padded batch of two, so that the attention-mask path (not an all-ones shortcut) is in the graph.
    sample = tokenizer(["a photo of a dog on the beach", "a cat"], padding=True, return_tensors="pt")
    args = (sample["input_ids"], sample["attention_mask"])
    dynamic = {"batch": 0, "sequence": 1}
    axes = {name: {v: k for k, v in dynamic.items()} for name in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow; the result is verified below
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic axes as declared
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def _verify(folder: Path, model_ref: str, tokenizer: Any, info: ExportInfo, reference: Callable[[Sequence[str]], np.ndarray]) -> float:
    texts = list(VERIFY_TEXTS)
    onnx = OnnxTextEncoder.load(folder, model_ref)
    want_ids = tokenizer(texts, truncation=True, max_length=info.max_length)["input_ids"]
    got_ids = onnx.token_ids(texts)
    for text, want, got in zip(texts, want_ids, got_ids):
        if list(want) != got:
            raise ModelLoadError(
                f"ONNX export of {model_ref!r}: the saved tokenizer gives other token ids than the original for "
                f"{text[:40]!r} ({got[:8]}... vs {list(want)[:8]}...); the export was not kept"
            )
    expected = reference(texts)
    batched = onnx.encode_texts(texts)
    single = np.concatenate([onnx.encode_texts([t]) for t in texts])
    cosines = np.minimum((expected * batched).sum(1), (expected * single).sum(1))
    worst = int(np.argmin(cosines))
    if not cosines[worst] >= MIN_COSINE:
        raise ModelLoadError(
            f"ONNX export of {model_ref!r} does not match torch: cosine {cosines[worst]:.6f} < {MIN_COSINE} "
            f"for {texts[worst][:40]!r}; the export was not kept"
        )
    return float(cosines.min())


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "sentence-transformers", "tokenizers", "onnx", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
