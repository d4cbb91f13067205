"""CLIP preprocessing on decoding workers: the fast path equals the checkpoint's processor bit for bit."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessorPil

from clip_search.pixels import ClipPixels, ProcessorPixels, pixel_function

# Landscape, portrait, square, one pixel off square, extreme ratios, smaller than the crop, odd sizes.
SIZES = [(640, 427), (427, 640), (224, 224), (225, 224), (224, 225), (1000, 301), (301, 1000), (50, 40), (3, 500), (500, 2), (1023, 767), (2, 2), (97, 131)]


def _images(seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = SIZES + [tuple(int(v) for v in rng.integers(2, 1400, 2)) for _ in range(20)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def _reference(processor: CLIPImageProcessorPil, image: Image.Image) -> np.ndarray:
    return processor(images=image, return_tensors="np")["pixel_values"][0]


@pytest.mark.parametrize(
    "processor",
    [
        CLIPImageProcessorPil(),  # openai/clip-vit-base-patch32's: short side 224, crop 224, bicubic
        CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}),  # the demo CLIP's
        CLIPImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 192}, resample=Image.BILINEAR),
    ],
    ids=["vit-b32", "demo", "rectangular-crop"],
)
def test_fast_path_equals_the_processor_bit_for_bit(processor: CLIPImageProcessorPil) -> None:
    fast = pixel_function(processor)
    assert isinstance(fast, ClipPixels)
    for image in _images():
        ref, got = _reference(processor, image), fast(image)
        assert got.dtype == np.float32 and got.shape == ref.shape, image.size
        assert np.array_equal(got, ref), f"{image.size}: {np.abs(got - ref).max()}"


@pytest.mark.parametrize(
    "settings",
    [
        {"do_center_crop": False},
        {"size": {"height": 224, "width": 224}},
        {"size": {"shortest_edge": 200}, "crop_size": {"height": 224, "width": 224}},  # crop larger than the resize: padding
        {"do_normalize": False},
    ],
)
def test_other_recipes_run_through_the_processor_itself(settings: dict) -> None:
    processor = CLIPImageProcessorPil(**settings)
    pixels = pixel_function(processor)
    assert isinstance(pixels, ProcessorPixels)
    image = _images(1)[0]
    assert np.array_equal(pixels(image), _reference(processor, image))


def test_both_paths_survive_pickling_into_a_decoding_worker() -> None:
    image = _images(2)[0]
    for processor in (CLIPImageProcessorPil(), CLIPImageProcessorPil(do_center_crop=False)):
        pixels = pixel_function(processor)
        assert np.array_equal(pickle.loads(pickle.dumps(pixels))(image), pixels(image))
