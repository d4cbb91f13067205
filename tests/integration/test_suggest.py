"""Query suggestions: a small GPT-2 trained on the demo store's captions lowers its loss, beats the bigram baseline,
is saved with a model card, and its suggestions are queries the engine answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from clip_search.cli import main
from clip_search.config import DEMO_STORE
from clip_search.engine import SearchEngine
from clip_search.store import EmbeddingStore
from clip_search.suggest import Suggester, SuggesterConfig, bigram_perplexity, store_captions, strong_share, train_suggester


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("suggester")
    return out, train_suggester(DEMO_STORE, out, SuggesterConfig(steps=60, vocab_size=400))


def test_training_lowers_the_loss_and_beats_a_bigram_model(trained) -> None:
    out, report = trained
    assert report.last_loss < 0.6 * report.first_loss
    assert report.perplexity < report.bigram_perplexity
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert "perplexity" in (out / "README.md").read_text()


def test_suggestions_complete_the_prefix_and_are_answered(trained) -> None:
    suggester = Suggester(trained[0])
    completions = suggester.complete("two small", 3)
    assert completions and all(c.startswith("two small") and len(c) > len("two small") for c in completions)
    assert suggester.complete("two small", 3) == completions  # beam search: the same prefix, the same suggestions
    engine = SearchEngine.load(DEMO_STORE)
    assert 0.0 <= strong_share(engine, completions + suggester.try_also("a red star")) <= 1.0
    for text in completions:
        assert engine.search(text, top_k=1).hits


def test_a_prefix_that_leaves_out_a_word_the_captions_always_have_still_gets_their_word_order(trained) -> None:
    # Every demo caption names a size ("two small green circles at the top, …"); a model that learnt each word's
    # absolute position continued "two green" as "two green circles at on the right" (trained with shifted positions,
    # it cannot lean on them).
    captions = [c.casefold().split() for c in store_captions(EmbeddingStore.open(DEMO_STORE))]
    seen = {pair for words in captions for pair in zip(words, words[1:])}
    for completion in Suggester(trained[0]).complete("two green", 3):
        words = completion.casefold().split()
        assert set(zip(words[1:], words[2:])) <= seen, completion


def test_bigram_baseline_is_uniform_without_data() -> None:
    assert bigram_perplexity([[0, 1]], [[2, 3]], vocab=10) == pytest.approx(10.0)


def test_cli_refuses_a_store_without_captions(folder_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-suggester", str(folder_store), "--out", str(tmp_path / "s"), "--steps", "1"]) == 1
    assert "no caption column" in capsys.readouterr().err


def test_a_folder_that_is_not_a_suggester_is_a_model_load_error(tmp_path: Path) -> None:
    from clip_search.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="cannot load the suggester .*train-suggester"):
        Suggester(tmp_path)
