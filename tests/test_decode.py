"""Tests for clip_search.decode over a corpus of good, odd and broken image files made with PIL."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from clip_search.decode import decode_image
from clip_search.errors import SkipItem

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """A random RGB image (noise does not compress, so truncation cuts into pixel data)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (1-bit grey) followed by a few bytes of pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write every case of the corpus to a folder, as precompute would find it."""
    root = tmp_path_factory.mktemp("corpus")
    files: dict[str, bytes] = {}

    files["good.jpg"] = _save(Image.new("RGB", (64, 48), RED), "JPEG", quality=95)
    noisy_jpeg = _save(_noise(256, 256), "JPEG", quality=90)
    files["truncated.jpg"] = noisy_jpeg[: len(noisy_jpeg) // 2]
    noisy_png = _save(_noise(256, 256, seed=1), "PNG")
    files["truncated.png"] = noisy_png[: len(noisy_png) * 6 // 10]
    files["zero.jpg"] = b""
    files["text.jpg"] = b"<html><body>this is not an image</body></html>\n"

    files["cmyk.jpg"] = _save(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95)  # red in CMYK

    ramp = (np.arange(32 * 16, dtype=np.uint32).reshape(16, 32) * 65535 // (32 * 16 - 1)).astype(np.uint16)
    ramp[0, 0], ramp[0, 1], ramp[0, 2] = 0, 32896, 65535
    sixteen = Image.fromarray(ramp)
    assert sixteen.mode.startswith("I;16")
    files["gray16.png"] = _save(sixteen, "PNG")

    palette = Image.new("P", (20, 10), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    palette.paste(1, (10, 0, 20, 10))  # right half red, left half index 0 = transparent
    files["palette_transparent.png"] = _save(palette, "PNG", transparency=0)

    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (10, 0, 20, 10))
    files["rgba.png"] = _save(rgba, "PNG")
    files["la.png"] = _save(Image.new("LA", (12, 12), (0, 0)), "PNG")

    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (20, 0, 40, 20))  # stored: left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    files["exif_rotated.jpg"] = _save(stored, "JPEG", quality=95, exif=exif.tobytes())

    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, (0, 255, 0), BLUE)]
    files["animated.gif"] = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    files["animated.webp"] = _save(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True
    )

    files["bomb_pil.png"] = _png_header_only(20000, 20000)  # 400 M pixels: beyond PIL's own ceiling
    files["bomb_ours.png"] = _png_header_only(9000, 9000)  # 81 M pixels: under PIL's, over MAX_IMAGE_PIXELS
    files["big.jpg"] = _save(_noise(2000, 1500, seed=2).resize((2000, 1500)), "JPEG", quality=80)

    # HEIC written by pillow-heif itself (not through Pillow, so nothing here registers the plugin), AVIF by Pillow.
    halves = Image.new("RGB", (40, 20), RED)
    halves.paste(BLUE, (20, 0, 40, 20))
    files["photo.heic"] = _heic(halves)
    files["alpha.heic"] = _heic(Image.new("RGBA", (16, 16), (0, 0, 255, 0)))
    files["truncated.heic"] = files["photo.heic"][: len(files["photo.heic"]) // 2]
    files["photo.avif"] = _save(halves, "AVIF", quality=90)
    files["movie.mp4"] = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64  # ISO media, not an image

    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _heic(img: Image.Image) -> bytes:
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, quality=95)
    return buf.getvalue()


def _decode(corpus: Path, name: str, **kwargs) -> Image.Image:
    return decode_image((corpus / name).read_bytes(), name=name, **kwargs)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("good.jpg", (64, 48)),
        ("cmyk.jpg", (40, 30)),
        ("gray16.png", (32, 16)),
        ("palette_transparent.png", (20, 10)),
        ("rgba.png", (20, 10)),
        ("la.png", (12, 12)),
        ("exif_rotated.jpg", (20, 40)),
        ("animated.gif", (30, 20)),
        ("animated.webp", (30, 20)),
        ("big.jpg", (2000, 1500)),
        ("photo.heic", (40, 20)),
        ("alpha.heic", (16, 16)),
        ("photo.avif", (40, 20)),
    ],
)
def test_good_images_decode_to_loaded_rgb(corpus: Path, name: str, size: tuple[int, int]) -> None:
    img = _decode(corpus, name)
    assert img.mode == "RGB"
    assert img.size == size
    assert len(img.tobytes()) == size[0] * size[1] * 3


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.jpg", "truncated"),
        ("truncated.png", "truncated"),
        ("zero.jpg", "empty file"),
        ("text.jpg", "not an image"),
        ("bomb_pil.png", "decompression bomb"),
        ("bomb_ours.png", "too large: 9000x9000"),
        ("truncated.heic", "^cannot read HEIF image: damaged, truncated"),
        ("movie.mp4", "not an image"),
    ],
)
def test_bad_files_raise_skip_with_reason(corpus: Path, name: str, reason: str) -> None:
    with pytest.raises(SkipItem, match=reason):
        _decode(corpus, name)


def test_truncated_images_are_not_loaded_leniently(corpus: Path) -> None:
    with pytest.raises(SkipItem):
        _decode(corpus, "truncated.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_colour_conversions(corpus: Path) -> None:
    r, g, b = _decode(corpus, "cmyk.jpg").getpixel((20, 15))
    assert r > 200 and g < 60 and b < 60  # CMYK red stays red

    grey = _decode(corpus, "gray16.png")
    assert [grey.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]  # scaled, not clipped

    palette = _decode(corpus, "palette_transparent.png")
    assert palette.getpixel((2, 5)) == (255, 255, 255)  # transparent -> white
    assert palette.getpixel((15, 5)) == RED

    rgba = _decode(corpus, "rgba.png")
    assert rgba.getpixel((2, 5)) == (255, 255, 255)
    assert rgba.getpixel((15, 5)) == BLUE
    assert _decode(corpus, "la.png").getpixel((3, 3)) == (255, 255, 255)


def test_exif_orientation_is_applied(corpus: Path) -> None:
    img = _decode(corpus, "exif_rotated.jpg")
    assert img.size == (20, 40)
    top, bottom = img.getpixel((10, 5)), img.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp"])
def test_animation_gives_first_frame(corpus: Path, name: str) -> None:
    r, g, b = _decode(corpus, name).getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


def test_bomb_check_happens_before_decoding_and_leaves_pil_global(corpus: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    # The 9000x9000 file holds almost no pixel data: a decode attempt would fail as truncated instead.
    with pytest.raises(SkipItem, match="too large"):
        _decode(corpus, "bomb_ours.png")
    with pytest.raises(SkipItem, match="too large"):
        _decode(corpus, "good.jpg", max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == before


def test_pil_bomb_warning_is_a_skip_when_warnings_are_errors() -> None:
    data = _png_header_only(10000, 10000)  # over Image.MAX_IMAGE_PIXELS, under twice it
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(SkipItem, match="decompression bomb"):
            decode_image(data, max_pixels=200_000_000)


def test_draft_mode_decodes_big_jpeg_at_reduced_scale(corpus: Path) -> None:
    img = _decode(corpus, "big.jpg", draft_size=224)
    assert img.mode == "RGB"
    assert img.size == (500, 375)  # 1/4 scale: 1/8 would make the short side 188 < 224
    assert min(img.size) >= 224
    assert _decode(corpus, "big.jpg", draft_size=1000).size == (2000, 1500)  # no smaller scale fits
    assert _decode(corpus, "gray16.png", draft_size=8).size == (32, 16)  # not a JPEG: unchanged


@pytest.mark.parametrize("name", ["photo.heic", "photo.avif"])
def test_heic_and_avif_keep_their_colours(corpus: Path, name: str) -> None:
    img = _decode(corpus, name)
    left, right = img.getpixel((5, 10)), img.getpixel((35, 10))
    assert left[0] > 200 and left[2] < 60
    assert right[2] > 200 and right[0] < 60
    assert _decode(corpus, "alpha.heic").getpixel((8, 8)) == (255, 255, 255)  # transparent -> white


def _decode_in_fresh_python(path: Path, prelude: str = "") -> str:
    """Decode `path` in a new interpreter (Pillow's plugin registry starts empty); print the size or the skip."""
    script = prelude + (
        "import sys\n"
        "from PIL import Image\n"
        "from clip_search.decode import decode_image\n"
        "from clip_search.errors import SkipItem\n"
        "assert 'HEIF' not in Image.OPEN, 'registered before use'\n"
        "try:\n"
        "    print(decode_image(open(sys.argv[1], 'rb').read()).size)\n"
        "except SkipItem as e:\n"
        "    print('skip:', e)\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_heif_plugin_is_registered_on_first_use(corpus: Path) -> None:
    assert _decode_in_fresh_python(corpus / "photo.heic") == "(40, 20)"


def test_heic_without_pillow_heif_is_a_skip_that_says_so(corpus: Path) -> None:
    no_plugin = "import sys\nsys.modules['pillow_heif'] = None\n"  # `import pillow_heif` now fails
    out = _decode_in_fresh_python(corpus / "photo.heic", no_plugin)
    assert out == "skip: HEIC/HEIF image, but pillow-heif (which reads it) is not installed: pip install pillow-heif"
    assert _decode_in_fresh_python(corpus / "good.jpg", no_plugin) == "(64, 48)"


def test_avif_without_pillow_avif_is_a_skip_that_says_so(corpus: Path) -> None:
    no_avif = "import sys\nsys.modules['PIL._avif'] = None\n"  # a Pillow built without libavif
    out = _decode_in_fresh_python(corpus / "photo.avif", no_avif)
    assert out == "skip: AVIF image, but this Pillow cannot read AVIF: install Pillow 11.3 or newer"
