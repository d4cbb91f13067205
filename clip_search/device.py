"""Choosing where and in what precision models run: explicit arguments, with one rule for the defaults."""

from __future__ import annotations

import torch

from clip_search.errors import ClipSearchError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA when present, else CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ClipSearchError(f"unknown device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ClipSearchError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """The compute dtype: the one asked for, else float16 on GPU and float32 on CPU."""
    if dtype in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ClipSearchError(f"unknown dtype {dtype!r}: choose one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]
