"""Scales and per-scale settings tables (sgdbook.book.scales)."""

import pytest

from sgdbook.book.scales import SCALES, ScaleError, ScaleTable, check_scale


def test_check_scale_lists_valid_scales():
    assert check_scale("book") == "book"
    with pytest.raises(ScaleError, match="valid scales are smoke, book, paper"):
        check_scale("bogus")


def test_scale_table_validates_and_renders():
    table = ScaleTable(
        settings={s: {"n": i + 1} for i, s in enumerate(SCALES)},
        descriptions={"n": "a number"},
        paper_value={"n": "3"},
    )
    assert table("paper") == {"n": 3}
    md = table.to_markdown(current="book")
    assert "**book** (this run)" in md and "| n | a number | 1 | 2 | 3 | 3 |" in md
    with pytest.raises(ValueError, match="describes"):
        ScaleTable(settings={s: {"n": 1} for s in SCALES}, descriptions={"m": "x"})
    with pytest.raises(ValueError, match="exactly the scales"):
        ScaleTable(settings={"smoke": {}, "book": {}}, descriptions={})
