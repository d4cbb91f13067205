"""Metadata filters: parsing, typed comparison per column type, and one-line errors for what cannot be compared."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest

from clip_search.errors import QueryError
from clip_search.filters import Condition, parse_condition, parse_conditions, row_mask

TABLE = pa.table(
    {
        "id": ["a", "b", "c", "d"],
        "photographer": ["Ann", "Bo", None, "Ann"],
        "likes": [10, 250, 3, None],
        "taken": pa.array([datetime.date(2019, 5, 1), datetime.date(2020, 1, 1), datetime.date(2021, 7, 9), None]),
        "day": ["2019-05-01", "2020-01-01", "2021-07-09", "2022-02-02"],  # ISO dates kept as text compare in order too
        "caption": ["A dog on the Beach", "a cat", "beach at night", None],
        "public": [True, False, True, True],
    }
)


def mask(*conditions: str) -> list[bool]:
    return row_mask(TABLE, parse_conditions(conditions)).tolist()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("photographer == Ann", Condition("photographer", "==", "Ann")),
        ("photographer = 'Ann Lee'", Condition("photographer", "==", "Ann Lee")),
        ('caption ~ "on the"', Condition("caption", "~", "on the")),
        ("likes>=100", Condition("likes", ">=", "100")),
        ("a b != c", Condition("a b", "!=", "c")),
    ],
)
def test_parse(text: str, expected: Condition) -> None:
    assert parse_condition(text) == expected


@pytest.mark.parametrize(
    "conditions, expected",
    [
        (("photographer == Ann",), [True, False, False, True]),
        (("photographer != Ann",), [False, True, False, False]),  # a missing value never matches
        (("likes > 5",), [True, True, False, False]),
        (("likes <= 10",), [True, False, True, False]),
        (("taken >= 2020-01-01",), [False, True, True, False]),
        (("taken >= 2020-01-01", "taken < 2021-01-01"), [False, True, False, False]),
        (("day < 2020-06-01",), [True, True, False, False]),
        (("caption ~ beach",), [True, False, True, False]),
        (("public == false",), [False, True, False, False]),
        (("photographer == Ann", "public == true", "likes < 100"), [True, False, False, False]),
    ],
)
def test_masks(conditions: tuple[str, ...], expected: list[bool]) -> None:
    assert mask(*conditions) == expected


@pytest.mark.parametrize(
    "condition, message",
    [
        ("nonsense", "where: cannot read 'nonsense'"),
        ("likes >", "where: cannot read"),
        ("colour == red", "where: the store has no column 'colour'; its columns are: id, photographer"),
        ("likes > many", "where: likes > many: 'likes' holds int64, and 'many' is not one"),
        ("taken > soon", "'taken' holds date32"),
        ("public == maybe", "'public' holds bool"),
    ],
)
def test_errors_name_the_condition(condition: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        mask(condition)


def test_no_condition_keeps_every_row() -> None:
    assert row_mask(TABLE, ()).dtype == np.bool_ and all(row_mask(TABLE, ()))
