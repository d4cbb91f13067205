"""A CLIP checkpoint loaded through transformers: image and text encoders returning L2-normalised float32 arrays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, CLIPModel

from clip_search.config import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DEFAULT_TEXT_BATCH_SIZE
from clip_search.device import resolve_device, resolve_dtype
from clip_search.errors import ModelLoadError, one_line
from clip_search.hub import check_hub_model
from clip_search.vectors import l2_normalise

log = logging.getLogger(__name__)


@dataclass
class ClipEncoder:
    """A CLIP model with its processor, on one device and dtype."""

    model: CLIPModel
    processor: Any
    model_id: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(
        cls,
        model_id: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> ClipEncoder:
        """Load a Hugging Face CLIP checkpoint by hub id or local path."""
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        cached_only = check_hub_model(model_id, revision=revision, what="CLIP model")
        try:
            model = CLIPModel.from_pretrained(model_id, revision=revision, dtype=torch_dtype, local_files_only=cached_only)
            processor = AutoProcessor.from_pretrained(model_id, revision=revision, local_files_only=cached_only)
        except (OSError, ValueError, KeyError) as exc:
            where = "local folder" if Path(model_id).exists() else "model id"
            raise ModelLoadError(f"cannot load CLIP {where} {model_id!r}: {one_line(exc)}") from None
        model.eval().to(dev)
        return cls(model, processor, str(model_id), revision, dev, torch_dtype)

    @property
    def dim(self) -> int:
        """Dimension of the joint embedding space."""
        return int(self.model.config.projection_dim)

    @property
    def logit_scale(self) -> float:
        """The learned temperature CLIP multiplies cosine similarities by before a softmax."""
        return float(self.model.logit_scale.detach().float().exp().item())

    @property
    def commit_hash(self) -> str | None:
        """The hub commit the weights came from, when they came from the hub."""
        return getattr(self.model.config, "_commit_hash", None)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Pixel values for a batch of RGB images, as the checkpoint's processor prepares them."""
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def encode_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Image embeddings for preprocessed pixels: N×D, L2-normalised, float32."""
        pixels = pixel_values.to(self.device, self.dtype)
        out = self.model.get_image_features(pixel_values=pixels)
        return l2_normalise(_features(out).float().cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Image embeddings for PIL images, batched: N×D, L2-normalised, float32."""
        chunks = [self.encode_pixels(self.preprocess(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH_SIZE) -> np.ndarray:
        """Text embeddings through CLIP's own text encoder: N×D, L2-normalised, float32."""
        tokenizer = self.processor.tokenizer
        max_len = min(int(tokenizer.model_max_length), int(self.model.config.text_config.max_position_embeddings))
        chunks = []
        for i in range(0, len(texts), batch_size):
            # Pad only to the longest text of the batch: a lone query runs unpadded (about 2x faster).
            batch = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            out = self.model.get_text_features(input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device))
            chunks.append(l2_normalise(_features(out).float().cpu().numpy()))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)


def _features(out: Any) -> torch.Tensor:
    # transformers 5 returns a BaseModelOutputWithPooling whose pooler_output is the projected embedding.
    return out if isinstance(out, torch.Tensor) else out.pooler_output
