"""CLIP and student encoders loaded through the same from_pretrained paths users use, on tiny offline models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip_search.clip_model import ClipEncoder
from clip_search.errors import ModelLoadError
from clip_search.text_student import StudentTextEncoder
from tests.conftest import draw_photo


def test_clip_encodes_unit_float32_rows_batch_independent(tiny_clip: Path) -> None:
    clip = ClipEncoder.load(str(tiny_clip))
    assert clip.device.type == "cpu" and clip.dtype == torch.float32 and clip.dim == 16
    images = [draw_photo(c, s) for c in ("red", "blue", "green") for s in ("circle", "square")]
    together = clip.encode_images(images, batch_size=4)
    alone = np.concatenate([clip.encode_images([im]) for im in images])
    assert together.shape == (6, 16) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    texts = clip.encode_texts(["a red circle", "a blue square on the left of a tree", "猫"], batch_size=2)
    assert texts.shape == (3, 16) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, rtol=1e-5)
    # Padding to the batch's longest text must not change a text's embedding.
    np.testing.assert_allclose(texts[0], clip.encode_texts(["a red circle"])[0], atol=1e-5)
    assert clip.logit_scale == pytest.approx(np.exp(np.log(1 / 0.07)), rel=1e-4)


def test_clip_bfloat16_stays_close_to_float32(tiny_clip: Path) -> None:
    images = [draw_photo("red", "circle"), draw_photo("blue", "square")]
    ref = ClipEncoder.load(str(tiny_clip)).encode_images(images)
    low = ClipEncoder.load(str(tiny_clip), dtype="bfloat16").encode_images(images)
    assert low.dtype == np.float32
    assert (ref * low).sum(axis=1).min() > 0.99


def test_unknown_model_offline_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load CLIP model id 'no-such-org/no-such-clip'") as err:
        ClipEncoder.load("no-such-org/no-such-clip")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="local folder"):
        ClipEncoder.load(str(tmp_path))
    with pytest.raises(ModelLoadError, match="multilingual text model id .no-such-org"):
        StudentTextEncoder.load("no-such-org/no-such-student")


def test_student_loads_in_our_loader_and_in_sentence_transformers(tiny_student: Path) -> None:
    from sentence_transformers import SentenceTransformer

    student = StudentTextEncoder.load(str(tiny_student))
    assert student.dim == 16
    texts = ["ein roter Kreis", "红色的圆形", "a red circle"]
    ours = student.encode_texts(texts)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, rtol=1e-5)
    theirs = SentenceTransformer(str(tiny_student), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert (tiny_student / "modules.json").exists() and (tiny_student / "2_Dense").is_dir()
    assert student.encode_texts([]).shape == (0, 16)


def test_student_handles_hostile_text(tiny_student: Path, tiny_clip: Path) -> None:
    hostile = ["", "x" * 10_000, "🙂🚀🔥", "مرحبا بالعالم", "<script>alert(1)</script>"]
    for encoder in (StudentTextEncoder.load(str(tiny_student)), ClipEncoder.load(str(tiny_clip))):
        out = encoder.encode_texts(hostile)
        assert out.shape == (5, 16) and np.isfinite(out).all()


def test_image_modes_are_all_encodable(tiny_clip: Path) -> None:
    clip = ClipEncoder.load(str(tiny_clip))
    rgb = draw_photo("red", "circle")
    out = clip.encode_images([rgb.convert("RGB"), Image.new("RGB", (300, 20), (5, 5, 5))])
    assert out.shape == (2, 16)
