"""examples.json and `precompute --examples`: prompts with their languages, read and written by the store package;
sort_hits and the weights of combine_query."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip_search.engine import Hit, sort_hits
from clip_search.errors import QueryError, StoreError
from clip_search.search import combine_query
from clip_search.store import ExamplePrompt, examples_from_captions, read_examples, read_examples_file, write_examples


def test_prompts_keep_their_languages_and_old_files_still_read(tmp_path: Path) -> None:
    prompts = [ExamplePrompt("a red star", "en"), ExamplePrompt("ein roter Stern", "de"), ExamplePrompt("from a caption")]
    write_examples(tmp_path, prompts, "**notice**", languages=["en", "de"])
    back = read_examples(tmp_path)
    assert back is not None and back.prompts == tuple(prompts) and back.languages == ("en", "de") and back.notice == "**notice**"
    assert json.loads((tmp_path / "examples.json").read_text())["queries"] == ["a red star", "ein roter Stern", "from a caption"]
    (tmp_path / "examples.json").write_text(json.dumps({"queries": ["old style"], "notice": None}))
    old = read_examples(tmp_path)
    assert old is not None and old.prompts == (ExamplePrompt("old style"),) and old.languages is None
    for bad, message in (
        ({"prompts": [{"text": ""}]}, "'prompts' must be a list"),
        ({"prompts": [{"text": "x", "language": 3}]}, "'prompts' must be a list"),
        ({"prompts": [], "languages": "en"}, "'languages' must be a list"),
        ([1, 2], "must be a JSON object"),
    ):
        (tmp_path / "examples.json").write_text(json.dumps(bad))
        with pytest.raises(StoreError, match=message):
            read_examples(tmp_path)


def test_an_examples_file_is_text_lines_or_json(tmp_path: Path) -> None:
    text = tmp_path / "prompts.txt"
    text.write_text("# my prompts\na dog on a beach\nde: ein Hund am Strand\n\nzh: 海滩上的狗\nnote: not a language code here\n", encoding="utf-8")
    got = read_examples_file(text)
    assert got.prompts == (
        ExamplePrompt("a dog on a beach"), ExamplePrompt("ein Hund am Strand", "de"), ExamplePrompt("海滩上的狗", "zh"), ExamplePrompt("note: not a language code here"),
    )
    as_json = tmp_path / "examples.json"
    write_examples(tmp_path, [ExamplePrompt("a cat", "en")], languages=["en"])
    assert read_examples_file(as_json).prompts == (ExamplePrompt("a cat", "en"),)
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(StoreError, match="holds no prompts"):
        read_examples_file(tmp_path / "empty.txt")
    with pytest.raises(StoreError, match="cannot read the examples file"):
        read_examples_file(tmp_path / "missing.txt")


def test_examples_from_captions_are_distinct_short_and_spread() -> None:
    captions = [f"caption {i % 50}" for i in range(1000)] + ["x" * 200, None, ""]
    got = examples_from_captions(captions, count=5)
    assert got is not None and len(got.prompts) == 5 and len(set(got.queries)) == 5
    assert all(p.language is None and len(p.text) <= 80 for p in got.prompts)
    assert examples_from_captions([None, "", "y" * 300]) is None


def _hit(rank: int, **metadata: object) -> Hit:
    return Hit(rank, rank, f"id{rank}", 1.0 / rank, f"/p/{rank}.png", None, {"id": f"id{rank}", **metadata})


def test_sort_hits_by_a_metadata_column() -> None:
    hits = [_hit(1, year=2019), _hit(2, year=None), _hit(3, year=2021), _hit(4, year=2019)]
    assert [h.rank for h in sort_hits(hits, "year")] == [1, 4, 3, 2]  # ties keep rank order, missing last
    assert [h.rank for h in sort_hits(hits, "year", descending=True)] == [3, 1, 4, 2]
    assert [h.rank for h in sort_hits([_hit(1, v="b"), _hit(2, v=3)], "v")] == [2, 1]  # mixed types: as text
    with pytest.raises(QueryError, match="no column 'owner'"):
        sort_hits(hits, "owner")
    assert sort_hits([], "year") == []


def test_combine_query_weights_the_positive_parts() -> None:
    text, image = np.eye(3, dtype=np.float32)[0], np.eye(3, dtype=np.float32)[1]
    even = combine_query([text, image])
    assert np.isclose(even[0], even[1])
    leaning = combine_query([text, image], weights=[0.2, 0.8])
    assert leaning[1] > leaning[0] > 0 and np.isclose(np.linalg.norm(leaning), 1)
    assert np.allclose(combine_query([text, image], weights=[1, 0]), text)
    for bad in ([1], [-1, 1], [0, 0], [np.nan, 1]):
        with pytest.raises(ValueError, match="weights"):
            combine_query([text, image], weights=bad)


def test_a_negative_removes_what_the_query_shares_with_it() -> None:
    white_star = np.array([0.6, 0.8, 0.0], np.float32)  # star, white
    white = np.array([0.0, 1.0, 0.0], np.float32)
    pushed = combine_query([white_star], [white], negative_weight=0.5)
    assert pushed[1] < 0 < pushed[0]  # no white left in the query, and a push away from it
    assert np.allclose(combine_query([white_star], [white], negative_weight=0.0), [1, 0, 0])
