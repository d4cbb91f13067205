"""The search mode and hybrid weights as every app entry point sends them, checked in `SearchRequest.from_payload`:
the forms accepted, the one-line errors, the page link they make; and the summary's HTML escaping."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from clip_search.config import HYBRID_WEIGHTS, SEARCH_MODES
from clip_search.errors import QueryError
from clip_search.page_view import summary_html
from clip_search.summary import ResultSummary
from clip_search.ui import SearchRequest


def request(**options) -> SearchRequest:
    return SearchRequest.from_payload("a red star", None, None, 5, None, **options)


def test_mode_and_weights_in_every_form() -> None:
    assert request().mode == "auto" and request().weights is None
    assert request(mode="keyword").query(None).mode == "keyword"
    expected = {**HYBRID_WEIGHTS, "image": 1.0, "keyword": 3.0}
    for given in ({"image": 1, "keyword": 3}, "image=1, keyword=3", [1, HYBRID_WEIGHTS["caption"], 3], {"image": "1", "keyword": "3"}):
        assert dict(request(weights=given).weights) == expected, given
        assert request(weights=given).query(None).weights == expected
    assert request(weights="").weights is None and request(weights={}).weights is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "pixels"}, "unknown search mode 'pixels': use auto, image, caption, keyword, hybrid"),
        ({"mode": 1}, "the search mode must be text"),
        ({"mode": "caption", "modes": ("image",)}, "this store has no text index, so no caption search"),
        ({"mode": "pixels", "modes": ("image",)}, "use auto, image"),
        ({"weights": 2}, "weights must be an object"),
        ({"weights": [1, 2]}, "weights as a list must hold 3 numbers (image, caption, keyword), got 2"),
        ({"weights": {"image": float("nan")}}, "the hybrid image weight must be a number from 0 to 10"),
        ({"weights": {"image": 10.5}}, "from 0 to 10"),
        ({"weights": {"image": None}}, None),
        ({"weights": {"image": [1]}}, "the hybrid image weight must be a number"),
        ({"weights": {"colour": 1}}, "no mode 'colour' to weigh"),
        ({"weights": "image=0,caption=0,keyword=0"}, "at least one"),
        ({"weights": "image=" + "9" * 300}, "the weights are too long"),
    ],
)
def test_bad_values_are_one_line_query_errors(options: dict, message: str | None) -> None:
    if message is None:  # a null weight keeps the default, as a null anywhere else does
        assert dict(request(**options).weights) == HYBRID_WEIGHTS
        return
    with pytest.raises(QueryError) as raised:
        request(**options)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_link_keeps_mode_and_weights_only_when_not_the_defaults() -> None:
    assert "mode" not in request().link() and "w=" not in request(weights=dict(HYBRID_WEIGHTS)).link()
    link = request(mode="caption", weights={"keyword": 2}).link()
    expected = quote(",".join(f"{mode}={weight:g}" for mode, weight in {**HYBRID_WEIGHTS, "keyword": 2}.items()))
    assert "mode=caption" in link and f"w={expected}" in link
    assert set(SEARCH_MODES) == {"image", "caption", "keyword", "hybrid"}


def test_summary_html_escapes_and_says_nothing_when_empty() -> None:
    assert summary_html(ResultSummary([])) == ""
    shown = summary_html(ResultSummary(["<b>a red star</b>"], "two <i>stars</i>", {"calm & quiet": 0.75, "busy": 0.25}), "mood")
    assert "&lt;b&gt;a red star&lt;/b&gt;" in shown and "two &lt;i&gt;stars&lt;/i&gt;" in shown and "calm &amp; quiet" in shown
    assert "By mood:" in shown and "75%" in shown and "<b>" not in shown
