"""Models built from nothing, offline: a CLIP BPE tokenizer trained on captions, a small random CLIP, a small text encoder.

The demo world trains these; the tests use tiny ones. Everything is saved with `save_pretrained`, so it loads
through exactly the `from_pretrained` path a hub checkpoint does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import BertConfig, BertModel, BertTokenizerFast, CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 1000, max_length: int = 77) -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer trained on `texts`, with every byte (and byte</w>) in its vocabulary.

    The full byte alphabet matters: an unseen character must not fall back to the unknown token, which for CLIP
    is <|endoftext|>, the position text pooling reads.
    """
    chars = sorted(ByteLevel.alphabet())
    base = [_BOS, _EOS] + chars + [c + "</w>" for c in chars]
    seed = CLIPTokenizer(vocab={t: i for i, t in enumerate(base)}, merges=[], model_max_length=max_length)
    trained = seed.train_new_from_iterator(texts, vocab_size=vocab_size, initial_alphabet=chars)
    state = json.loads(trained.backend_tokenizer.to_str())["model"]
    known = set(base)
    learned = [t for t in sorted(state["vocab"], key=state["vocab"].get) if t not in known]
    vocab = {t: i for i, t in enumerate(base + learned)}
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m) for m in state["merges"]], model_max_length=max_length)


def new_clip(
    tokenizer: CLIPTokenizer,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    projection_dim: int = 16,
    max_text_length: int = 32,
    seed: int = 0,
) -> tuple[CLIPModel, CLIPProcessor]:
    """A randomly initialised CLIP of the given size, with a processor that crops to `image_size`."""
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    common = dict(hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=layers, num_attention_heads=heads)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=max_text_length, **common, **ids),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **common),
        projection_dim=projection_dim,
    )
    tokenizer.model_max_length = max_text_length
    torch.manual_seed(seed)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_clip(model: CLIPModel, processor: CLIPProcessor, out: str | Path) -> Path:
    """Save a CLIP and its processor so that CLIPModel / AutoProcessor.from_pretrained(out) load them."""
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 2000, max_length: int = 64) -> BertTokenizerFast:
    """A lower-casing multilingual WordPiece tokenizer (BERT conventions, CJK split per character) trained on `texts`."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return BertTokenizerFast(tokenizer_object=tok, model_max_length=max_length, do_lower_case=True)


def new_text_encoder(
    tokenizer: BertTokenizerFast, out: str | Path, *, hidden_size: int = 32, layers: int = 2, heads: int = 4, seed: int = 0, **config: Any
) -> Path:
    """A randomly initialised BERT-style text encoder saved (with its tokenizer) as a Hugging Face model folder."""
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max(tokenizer.model_max_length, 64),
        pad_token_id=tokenizer.pad_token_id,
        **config,
    )
    out = Path(out)
    BertModel(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
