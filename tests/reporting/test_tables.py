"""Markdown and TSV tables, fixed-decimal numbers."""

from __future__ import annotations

import math

from espnet_ext.reporting.tables import (
    fixed,
    is_missing,
    markdown_row,
    markdown_table,
    signed,
    tsv_text,
    write_tsv_table,
)


def test_fixed_and_signed_numbers():
    assert fixed(3.14159) == "3.14" and fixed(2, 3) == "2.000" and fixed(0.5, 0) == "0"
    assert fixed(None) == "" and fixed(math.nan, missing="n/a") == "n/a"
    assert signed(0.5) == "+0.50" and signed(-1.25, 1) == "-1.2" and signed(0.0) == "+0.00"
    assert signed(math.nan, missing="-") == "-" and signed(None) == ""
    assert is_missing(None) and is_missing(float("nan")) and not is_missing(0.0) and not is_missing("")


def test_markdown_table_padded_and_compact():
    assert markdown_table(["a", "b"], [[1, "x"], [2.5, ""]]) == [
        "| a | b |", "|---|---|", "| 1 | x |", "| 2.5 |  |"]
    assert markdown_table(["a", "b"], [[1, "x"]], padded=False) == ["|a|b|", "|---|---|", "|1|x|"]
    assert markdown_table(["only"], []) == ["| only |", "|---|"]
    assert markdown_row(["-", 0], padded=False) == "|-|0|"


def test_tsv_text_and_atomic_write(tmp_path):
    assert tsv_text(["a", "b"], [[1, ""], ["x", 2.0]]) == "a\tb\n1\t\nx\t2.0\n"
    path = write_tsv_table(tmp_path / "sub" / "t.tsv", ["a"], [["1"]])
    assert path.read_text(encoding="utf-8") == "a\n1\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.tsv"]
