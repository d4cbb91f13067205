"""Query suggestions: a small GPT-2 trained on a store's captions completes what is being typed.

`train_suggester` trains a byte-level BPE (`tokenizers`) and a small `GPT2LMHeadModel` on the store's text (every
language it has), seeded, on a held-out split it reports perplexity for next to a bigram baseline (add-one smoothed,
same tokens), and saves both with `save_pretrained` and a model card. `Suggester` loads that folder and returns
completions of a prefix (beam search: the same prefix always gives the same suggestions).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clip_search.config import TEXT_COLUMNS
from clip_search.errors import ModelLoadError, StoreError, one_line
from clip_search.relevance import STRONG
from clip_search.store import EmbeddingStore

if TYPE_CHECKING:
    from clip_search.engine import SearchEngine, SearchResult

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class SuggesterConfig:
    """The suggester's size and training: small enough for a few minutes of CPU on the demo store."""

    vocab_size: int = 1000
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 2
    max_tokens: int = 48
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 3e-3
    held_out: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class SuggesterReport:
    """What training measured: held-out perplexity of the model and of the bigram baseline, first and last loss."""

    out: Path
    captions: int
    held_out: int
    perplexity: float
    bigram_perplexity: float
    first_loss: float
    last_loss: float


def store_captions(store: EmbeddingStore) -> list[str]:
    """The distinct texts of the store's caption-like columns, sorted (a StoreError when it has none)."""
    columns = [c for c in TEXT_COLUMNS if c in store.columns]
    if not columns:
        raise StoreError(f"{store.root} has no caption column ({', '.join(TEXT_COLUMNS)}) to train suggestions on")
    texts = {" ".join(str(v).split()) for c in columns for v in store.metadata.column(c).to_pylist() if v and str(v).strip()}
    return sorted(texts)


def train_suggester(store_path: str | Path, out: str | Path, config: SuggesterConfig = SuggesterConfig()) -> SuggesterReport:
    """Train the tokenizer and the GPT-2 on the store's captions, measure, and save them into `out`."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    captions = store_captions(EmbeddingStore.open(store_path, verify=False))
    rng = random.Random(config.seed)
    shuffled = captions[:]
    rng.shuffle(shuffled)
    cut = max(1, int(len(shuffled) * config.held_out))
    held, train = shuffled[:cut], shuffled[cut:]
    if len(train) < 2:
        raise StoreError(f"{store_path} has {len(captions)} distinct captions: too few to train suggestions on")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(train, vocab_size=config.vocab_size, min_frequency=2, special_tokens=[EOS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, pad_token=EOS)
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.max_tokens, n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    ))
    encode = lambda texts: [[tokenizer.eos_token_id, *tokenizer.encode(t)[: config.max_tokens - 2], tokenizer.eos_token_id] for t in texts]  # noqa: E731
    train_ids, held_ids = encode(train), encode(held)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    losses = []
    model.train()
    for _ in range(config.steps):
        batch = [train_ids[rng.randrange(len(train_ids))] for _ in range(config.batch_size)]
        inputs, labels = _padded(batch, tokenizer.eos_token_id)
        # Each sequence at a random offset: with captions of one template, a model that may rely on absolute positions
        # continues a prefix that leaves out a word ("two green") with the words of the wrong slot ("circles at on").
        shift = torch.tensor([rng.randrange(config.max_tokens - inputs.shape[1] + 1) for _ in batch])
        loss = model(input_ids=inputs, labels=labels, attention_mask=(labels != -100) | (inputs != tokenizer.eos_token_id), position_ids=shift[:, None] + torch.arange(inputs.shape[1])).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    perplexity = _perplexity(model, held_ids, tokenizer.eos_token_id)
    bigram = bigram_perplexity(train_ids, held_ids, len(tokenizer))
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = SuggesterReport(out, len(captions), len(held), round(perplexity, 3), round(bigram, 3), round(losses[0], 4), round(float(np.mean(losses[-20:])), 4))
    _write_card(out, store_path, config, report)
    return report


def bigram_perplexity(train: Sequence[Sequence[int]], held: Sequence[Sequence[int]], vocab: int) -> float:
    """Perplexity of an add-one smoothed bigram model of the training token sequences on the held-out ones."""
    pairs, firsts = Counter(), Counter()
    for seq in train:
        for a, b in zip(seq, seq[1:]):
            pairs[a, b] += 1
            firsts[a] += 1
    nll = [-math.log((pairs[a, b] + 1) / (firsts[a] + vocab)) for seq in held for a, b in zip(seq, seq[1:])]
    return math.exp(sum(nll) / len(nll))


class Suggester:
    """A trained suggester folder, loaded: completions of a typed prefix."""

    def __init__(self, folder: str | Path) -> None:
        from transformers import AutoTokenizer, GPT2LMHeadModel

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = GPT2LMHeadModel.from_pretrained(str(folder)).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load the suggester {str(folder)!r} (a folder `clip-search train-suggester` wrote): {one_line(exc)}") from None

    def complete(self, prefix: str, count: int = 5, max_new_tokens: int = 16) -> list[str]:
        """Up to `count` distinct completions of `prefix` (whole queries, the prefix included), most likely first."""
        import torch

        ids = [self.tokenizer.eos_token_id, *self.tokenizer.encode(prefix.rstrip())] if prefix.strip() else [self.tokenizer.eos_token_id]
        with torch.inference_mode():
            out = self.model.generate(
                torch.tensor([ids]), num_beams=max(count, 2), num_return_sequences=max(count, 2), max_new_tokens=max_new_tokens,
                do_sample=False, eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.eos_token_id,
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            )
        texts = [" ".join(self.tokenizer.decode(seq[1:], skip_special_tokens=True).split()) for seq in out]
        return list(dict.fromkeys(t for t in texts if t))[:count]

    def try_also(self, query: str, count: int = 3) -> list[str]:
        """Follow-ups of a query: completions of its first words that differ from it."""
        words = query.split()
        stem = " ".join(words[: max(1, len(words) // 2)])
        same = " ".join(words).casefold()
        return [t for t in self.complete(stem, count + 1) if t.casefold() != same][:count]


def has_strong_match(result: SearchResult | Exception) -> bool:
    """Whether a suggestion's search found a strong match: its best hit is in the strong relevance band."""
    return not isinstance(result, Exception) and bool(result.hits) and result.hits[0].band == STRONG


def strong_share(engine: SearchEngine, suggestions: Sequence[str]) -> float:
    """Share of suggestions whose best result is a strong match (`Hit.band`), searched as a user's query would be."""
    if not suggestions:
        return 0.0
    results = engine.search_many([{"text": s, "top_k": 1} for s in suggestions])
    return sum(1 for r in results if has_strong_match(r)) / len(suggestions)


def _padded(batch: Sequence[Sequence[int]], pad: int):
    import torch

    width = max(len(s) for s in batch)
    inputs = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, seq in enumerate(batch):
        inputs[i, : len(seq)] = torch.tensor(seq)
        labels[i, : len(seq)] = torch.tensor(seq)
    return inputs, labels


def _perplexity(model, sequences: Sequence[Sequence[int]], pad: int) -> float:
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(sequences), 64):
            inputs, labels = _padded(sequences[start : start + 64], pad)
            logits = model(input_ids=inputs, attention_mask=(labels != -100).long()).logits[:, :-1]
            target = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum")
            total += float(nll)
            count += int((target != -100).sum())
    return math.exp(total / count)


def _write_card(out: Path, store: str | Path, config: SuggesterConfig, report: SuggesterReport) -> None:
    from huggingface_hub import ModelCard

    card = ModelCard(
        f"---\nlibrary_name: transformers\npipeline_tag: text-generation\ntags:\n- clip-search\n- query-suggestions\n---\n\n"
        f"# Query suggestions for {Path(store).name}\n\n"
        f"A small GPT-2 ({config.n_layer} layers, width {config.n_embd}) with a byte-level BPE of {config.vocab_size} tokens, "
        f"trained by `clip-search train-suggester` on the {report.captions} distinct captions of the store, seed {config.seed}, "
        f"{config.steps} steps of batch {config.batch_size}. It completes search queries in the store's vocabulary.\n\n"
        f"Held-out captions ({report.held_out}): perplexity {report.perplexity} (add-one bigram baseline {report.bigram_perplexity}); "
        f"training loss {report.first_loss} → {report.last_loss}.\n"
    )
    card.save(out / "README.md")
