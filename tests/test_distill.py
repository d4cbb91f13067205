"""Parallel-data reading, held-out splits, and multilingual distillation of a tiny CLIP into a tiny BERT student."""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_search.errors import ClipSearchError, ModelLoadError, SourceError
from clip_search.parallel_data import ParallelPair, load_parallel, split_held_out

LANGS = ("de", "fr", "ru", "zh")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo_pairs() -> list[ParallelPair]:
    """600 demo-world pairs: 150 training scenes, each phrased in English and in de, fr, ru, zh."""
    from clip_search.demo.captions import parallel_pairs
    from clip_search.demo.scenes import TRAIN_SEED, generate_scenes

    triples = parallel_pairs(generate_scenes(150, TRAIN_SEED), LANGS, random.Random(0))
    return [ParallelPair(en, tr, lang) for en, lang, tr in triples]


@pytest.fixture(scope="module")
def demo_bert(tmp_path_factory: pytest.TempPathFactory, demo_pairs: list[ParallelPair]) -> Path:
    """A fresh tiny BERT (hidden 32, 2 layers) with a WordPiece vocabulary trained on the demo captions."""
    from clip_search.scratch import new_text_encoder, train_wordpiece_tokenizer

    texts = [p.source for p in demo_pairs] + [p.translation for p in demo_pairs]
    return new_text_encoder(train_wordpiece_tokenizer(texts, vocab_size=600), tmp_path_factory.mktemp("demo-bert"))


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path, demo_bert: Path, demo_pairs: list[ParallelPair]):
    """(report, folder) of a distillation of the tiny CLIP into the fresh BERT, 20% of the pairs held out."""
    from clip_search.distill import distill

    out = tmp_path_factory.mktemp("distilled") / "student"
    report = distill(
        str(tiny_clip), str(demo_bert), demo_pairs, out,
        epochs=10, batch_size=32, lr=3e-3, held_out_fraction=0.2, seed=0, device="cpu", progress=False,
    )
    print("\n" + report.table())
    return report, out


# ------------------------------------------------------------------------------------------------ reading


def test_tsv_with_header_reads_named_columns_and_skips_empty_sides(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "pairs.tsv"
    f.write_text(
        "lang\tid\tsource\ttranslation\n"
        "DE\t1\ta red circle\tein roter Kreis\n"
        "fr\t2\ta \"blue\" star\tune étoile \"bleue\"\n"
        "ru\t3\t\tкрасный круг\n"
        "\n"
        "\t4\ttwo squares\tdeux carrés\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="clip_search.parallel_data"):
        pairs = load_parallel(str(f))
    assert pairs == [
        ParallelPair("a red circle", "ein roter Kreis", "de"),
        ParallelPair('a "blue" star', 'une étoile "bleue"', "fr"),  # TSV quotes are text
        ParallelPair("two squares", "deux carrés", "xx"),
    ]
    assert "skipped 2 rows" in caplog.text


def test_headerless_tsv_two_and_three_columns(tmp_path: Path) -> None:
    two = tmp_path / "two.tsv"
    two.write_text("a red circle\tein roter Kreis\na star\tun étoile\n", encoding="utf-8")
    assert load_parallel(two) == [ParallelPair("a red circle", "ein roter Kreis", "xx"), ParallelPair("a star", "un étoile", "xx")]
    three = tmp_path / "three.txt"
    three.write_text("a red circle\t红色的圆形\tzh\n", encoding="utf-8")
    assert load_parallel(three) == [ParallelPair("a red circle", "红色的圆形", "zh")]


def test_csv_and_jsonl(tmp_path: Path) -> None:
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text('source,translation,lang\n"a circle, red",un cercle rouge,fr\n', encoding="utf-8")
    assert load_parallel(csv_file) == [ParallelPair("a circle, red", "un cercle rouge", "fr")]
    jsonl = tmp_path / "pairs.jsonl"
    records = [
        {"source": "a red circle", "translation": "ein roter Kreis", "lang": "de"},
        {"translation": {"en": "a blue star", "de": "ein blauer Stern", "fr": "une étoile bleue"}},
        {"source": "", "translation": "leer", "lang": "de"},
    ]
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n", encoding="utf-8")
    assert load_parallel(jsonl) == [
        ParallelPair("a red circle", "ein roter Kreis", "de"),
        ParallelPair("a blue star", "ein blauer Stern", "de"),
        ParallelPair("a blue star", "une étoile bleue", "fr"),
    ]


def test_dataset_folder_with_opus_translation_column(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features({"id": datasets.Value("string"), "translation": datasets.Translation(languages=["de", "en", "ru"])})
    rows = {
        "id": ["0", "1"],
        "translation": [
            {"en": "a red circle", "de": "ein roter Kreis", "ru": "красный круг"},
            {"en": "a star", "de": "ein Stern", "ru": ""},
        ],
    }
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "opus"))
    assert load_parallel(str(tmp_path / "opus")) == [
        ParallelPair("a red circle", "ein roter Kreis", "de"),
        ParallelPair("a red circle", "красный круг", "ru"),
        ParallelPair("a star", "ein Stern", "de"),
    ]
    flat = {"source": ["a red circle"], "translation": ["un cercle rouge"], "lang": ["fr"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(flat)}).save_to_disk(str(tmp_path / "flat"))
    assert load_parallel(str(tmp_path / "flat")) == [ParallelPair("a red circle", "un cercle rouge", "fr")]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("no-translation.tsv", "source\tlang\na\tde\n", r"no-translation\.tsv: the header has no 'translation' column"),
        ("ragged.tsv", "a\tb\nc\td\ne\n", r"ragged\.tsv line 3: 1 fields"),
        ("wide.tsv", "source\ttranslation\nx\ty\tz\n", r"wide\.tsv line 2: 3 fields, but the header names 2"),
        ("bad.jsonl", '{"source": "a", "translation": "b"}\n{not json\n', r"bad\.jsonl line 2: invalid JSON"),
        ("keys.jsonl", '{"text": "a"}\n', r"keys\.jsonl line 1: needs the keys 'source' and 'translation'"),
        ("no-en.jsonl", '{"translation": {"de": "a", "fr": "b"}}\n', r"no-en\.jsonl line 1: the translation object has no 'en' entry"),
        ("empty.tsv", "source\ttranslation\n\t\n", r"empty\.tsv: no parallel pairs"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path: Path, name: str, text: str, expected: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=expected):
        load_parallel(tmp_path / name)


def test_missing_data_and_dataset_without_columns(tmp_path: Path) -> None:
    import datasets

    with pytest.raises(SourceError, match="parallel data not found"):
        load_parallel(tmp_path / "nope.tsv")
    datasets.Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(SourceError, match=r"needs the columns source, translation.*\(columns: text\)"):
        load_parallel(tmp_path / "ds")


def test_split_held_out_is_deterministic_stratified_and_grouped(demo_pairs: list[ParallelPair]) -> None:
    train, held = split_held_out(demo_pairs, 0.2, seed=3)
    assert (train, held) == split_held_out(demo_pairs, 0.2, seed=3)
    assert split_held_out(demo_pairs, 0.2, seed=4)[1] != held
    assert Counter(train + held) == Counter(demo_pairs)
    for lang in LANGS:
        n = sum(p.lang == lang for p in demo_pairs)
        k = sum(p.lang == lang for p in held)
        assert round(0.2 * n) - 3 <= k <= round(0.2 * n)
    assert not {p.source for p in train} & {p.source for p in held}  # a held-out sentence is never trained on
    capped = split_held_out(demo_pairs, 0.5, seed=0, max_per_lang=5)[1]
    assert all(sum(p.lang == lang for p in capped) <= 5 for lang in LANGS)
    assert split_held_out(demo_pairs, 0.0, seed=0) == (demo_pairs, [])


# ------------------------------------------------------------------------------------------------ distillation


def test_distillation_lowers_held_out_mse_and_retrieves_translations(distilled) -> None:
    report, _ = distilled
    assert [f.label for f in report.after] == ["en (source)", *sorted(LANGS)]
    assert report.steps == 10 * -(-sum(report.train_pairs.values()) // 32)
    assert report.loss_by_epoch[-1] < report.loss_by_epoch[0] / 4
    for before, after in zip(report.before, report.after):
        assert after.mse < before.mse / 4, after.label
        assert after.candidates >= 20, after.label
        # retrieval among the held-out sources of the language, by cosine against CLIP's own embeddings
        assert after.accuracy > 3 * after.chance, after.label
        assert after.accuracy > before.accuracy, after.label


def test_saved_student_loads_both_ways_with_card_and_pairing(distilled, tiny_clip: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from clip_search.vectors import l2_normalise
    from clip_search.text_student import StudentTextEncoder

    report, out = distilled
    texts = ["a red circle", "ein roter Kreis", "红色的圆形", "три синих звезды"]
    ours = StudentTextEncoder.load(str(out), device="cpu")
    theirs = SentenceTransformer(str(out), device="cpu")
    assert ours.dim == 16
    np.testing.assert_allclose(ours.encode_texts(texts), l2_normalise(theirs.encode(texts)), atol=1e-5)

    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\n")
    assert str(tiny_clip) in card
    assert "language:\n- en\n- de\n- fr\n- ru\n- zh\n" in card
    assert "| zh |" in card and "MSE before" in card
    pairing = json.loads((out / "clip_search.json").read_text())
    assert pairing["teacher"] == str(tiny_clip) and pairing["dim"] == 16
    saved = json.loads((out / "distill_report.json").read_text())
    assert saved["after"][1]["accuracy"] == report.after[1].accuracy
    assert saved["after"][1]["chance"] == report.after[1].chance


def test_cli_freeze_body_trains_only_the_head(distilled, tiny_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sentence_transformers import SentenceTransformer

    from clip_search.cli import add_distill_parser

    _, start = distilled
    data = tmp_path / "pairs.tsv"
    data.write_text("source\ttranslation\tlang\n" + "".join(f"{p.source}\t{p.translation}\t{p.lang}\n" for p in _some_pairs(60)), encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_distill_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "frozen"
    args = parser.parse_args(
        ["distill", "--teacher", str(tiny_clip), "--student", str(start), "--parallel", str(data), "--out", str(out),
         "--epochs", "2", "--batch-size", "16", "--lr", "1e-2", "--freeze-body", "--held-out", "0.2", "--no-progress"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "MSE before" in printed and "en (source)" in printed and f"wrote {out}" in printed

    before, after = SentenceTransformer(str(start), device="cpu"), SentenceTransformer(str(out), device="cpu")
    body_before, body_after = before[0].auto_model.state_dict(), after[0].auto_model.state_dict()
    assert body_before.keys() == body_after.keys()
    assert all(torch.equal(body_before[k], body_after[k]) for k in body_before)
    assert not torch.equal(before[2].linear.weight, after[2].linear.weight)
    assert json.loads((out / "distill_report.json").read_text())["continued"] is True


def test_param_groups_decay_the_learning_rate_layer_by_layer(distilled) -> None:
    from sentence_transformers import SentenceTransformer

    from clip_search.distill import param_groups

    model = SentenceTransformer(str(distilled[1]), device="cpu")
    groups = param_groups(model, 1e-3, 0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == pytest.approx({"head": 1e-3, "layer.1": 5e-4, "layer.0": 2.5e-4, "embeddings": 1.25e-4, "body": 5e-4})
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(g["weight_decay"] == 0.0 for g in groups if g["params"][0].ndim == 1)
    assert {g["lr"] for g in param_groups(model, 1e-3, None)} == {1e-3}
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert {g["name"] for g in param_groups(model, 1e-3, 0.5)} == {"head"}


def test_distill_errors_are_one_line_project_errors(tiny_clip: Path, demo_bert: Path, tmp_path: Path) -> None:
    from clip_search.distill import distill
    from clip_search.text_student import assemble_student

    pairs = _some_pairs(20)
    with pytest.raises(ModelLoadError, match="cannot load CLIP"):
        distill(str(tmp_path / "no-teacher"), str(demo_bert), pairs, tmp_path / "o1", progress=False, device="cpu")
    with pytest.raises(ModelLoadError, match="cannot load student encoder"):
        distill(str(tiny_clip), str(tmp_path / "no-student"), pairs, tmp_path / "o2", progress=False, device="cpu")
    wrong = tmp_path / "eight-d"
    assemble_student(str(demo_bert), 8, device="cpu").save(str(wrong))
    with pytest.raises(ModelLoadError, match="8-d embeddings but the teacher's are 16-d"):
        distill(str(tiny_clip), str(wrong), pairs, tmp_path / "o3", progress=False, device="cpu")
    with pytest.raises(ClipSearchError, match="--layer-lr-decay"):
        distill(str(tiny_clip), str(demo_bert), pairs, tmp_path / "o4", layer_lr_decay=1.5, progress=False)
    with pytest.raises(SourceError, match="parallel data not found"):
        distill(str(tiny_clip), str(demo_bert), str(tmp_path / "none.tsv"), tmp_path / "o5", progress=False, device="cpu")


def _some_pairs(n: int) -> list[ParallelPair]:
    from clip_search.demo.captions import parallel_pairs
    from clip_search.demo.scenes import EVAL_SEED, generate_scenes

    triples = parallel_pairs(generate_scenes(n // len(LANGS) + 1, EVAL_SEED), LANGS, random.Random(1))[:n]
    return [ParallelPair(en, tr, lang) for en, lang, tr in triples]
