"""Turning the raw bytes of one image into an RGB PIL image, or a `SkipItem` saying why it cannot be."""

from __future__ import annotations

import io
import logging
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clip_search.config import MAX_IMAGE_PIXELS
from clip_search.errors import SkipItem

log = logging.getLogger(__name__)

# What PIL raises on corrupt or hostile files besides OSError; each becomes a skip with its message.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WHITE = (255, 255, 255, 255)

# ISO base media files (an `ftyp` box first) holding still images: which brands say which format.
# HEIF/HEIC is read by the pillow-heif plugin, registered on first use; AVIF by Pillow itself (11.3+).
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
_support: dict[str, str | None] = {}  # "HEIF"/"AVIF" -> None when readable here, else why not (per process)


def decode_image(
    data: bytes,
    *,
    draft_size: int | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    name: str = "",
) -> Image.Image:
    """Decode `data` into a fully loaded RGB image; raise `SkipItem(reason)` for anything unusable.

    EXIF orientation is applied, transparency is composited onto white, animations give their first
    frame, 16-bit greyscale is scaled to 8 bits. Images over `max_pixels` are refused from the header,
    before any pixel is decoded. With `draft_size`, JPEGs decode at the smallest 1/2, 1/4 or 1/8 scale
    whose short side is still at least `draft_size` (PIL's own decompression-bomb ceiling, twice
    `Image.MAX_IMAGE_PIXELS`, still applies on top of `max_pixels`). HEIC/HEIF (through pillow-heif,
    registered here on first use) and AVIF are read when this installation can; when it cannot, the
    skip reason says which package is missing.
    """
    if not data:
        raise SkipItem("empty file (0 bytes)")
    kind = _container_kind(data)
    missing = _enable(kind) if kind else None
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        if kind and not missing:  # the reader is there but refused the file
            raise SkipItem(f"cannot read {kind} image: damaged, truncated or a variant its reader does not handle") from e
        raise SkipItem(missing or "not an image (unrecognised format)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SkipItem(f"decompression bomb: {_short(e)}") from e
    except _DECODE_ERRORS as e:
        raise SkipItem(f"cannot read image header: {_short(e)}") from e

    width, height = img.size
    if width <= 0 or height <= 0:
        raise SkipItem(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise SkipItem(f"image too large: {width}x{height} pixels is over the limit of {max_pixels}")
    try:
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()  # first frame of an animation; truncation and corruption surface here
        out = _to_rgb(_apply_exif_orientation(img, name))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SkipItem(f"decompression bomb: {_short(e)}") from e
    except _DECODE_ERRORS as e:
        raise SkipItem(f"cannot decode {img.format or 'image'}: {_short(e)}") from e
    return out


def _container_kind(data: bytes) -> str | None:
    """The kind of an ISO base media image file, "AVIF" or "HEIF", by the brands of its `ftyp` box; else None."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    end = min(max(int.from_bytes(data[:4], "big"), 16), len(data), 256)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}  # major, then compatible brands
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    return None


def _enable(kind: str) -> str | None:
    """Make Pillow read `kind` ("HEIF" or "AVIF") in this process, once; None when it can, else the reason."""
    if kind not in _support:
        _support[kind] = _enable_heif() if kind == "HEIF" else _enable_avif()
    return _support[kind]


def _enable_heif() -> str | None:
    try:
        import pillow_heif
    except ImportError:
        return "HEIC/HEIF image, but pillow-heif (which reads it) is not installed: pip install pillow-heif"
    pillow_heif.register_heif_opener()
    return None


def _enable_avif() -> str | None:
    from PIL import features

    if features.check("avif"):
        return None
    try:  # pillow-heif before 1.0 read AVIF too
        from pillow_heif import register_avif_opener  # type: ignore[attr-defined]
    except ImportError:
        return "AVIF image, but this Pillow cannot read AVIF: install Pillow 11.3 or newer"
    register_avif_opener()
    return None


def _short(e: BaseException) -> str:
    """One line describing an exception, for a skip reason."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text or type(e).__name__


def _apply_exif_orientation(img: Image.Image, name: str) -> Image.Image:
    """The image turned upright per its EXIF orientation; broken EXIF leaves it as stored (logged)."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, struct.error) as e:
        log.warning("ignoring unreadable EXIF orientation of %s: %s", name or "image", _short(e))
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: alpha onto white, 16-bit and float greyscale scaled to 8 bits."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_grey_to_uint8(np.asarray(img), mode), mode="L").convert("RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB", "1") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _grey_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit (or 32-bit int / float) greyscale array to 0..255."""
    if mode == "F":
        values = arr.astype(np.float32)
        if values.size and float(np.nanmax(values)) <= 1.0:
            values = values * 255.0
        return np.clip(np.nan_to_num(values), 0, 255).astype(np.uint8)
    # PNG/TIFF 16-bit greyscale opens as I;16* or I: values span 0..65535.
    values = np.clip(arr.astype(np.int64), 0, 65535)
    return ((values * 255 + 32767) // 65535).astype(np.uint8)
