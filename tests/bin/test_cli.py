"""The layer every entry point shares (espnet_ext.bin.cli): argument types, log setup, the one
exit status for bad input, and explicit encoder registration instead of side-effect imports."""

from __future__ import annotations

import argparse
import ast
import logging
from pathlib import Path

import pytest

from espnet_ext.bin.cli import (
    BAD_INPUT,
    boolean,
    csv_list,
    fail,
    float_list,
    float_or_none,
    int_list,
    run_guarded,
    setup_logging,
    str_or_none,
)

BIN = Path(__file__).resolve().parents[2] / "espnet_ext" / "bin"


def test_csv_list_drops_blanks_and_spaces():
    assert csv_list("a, b,,c ,") == ["a", "b", "c"]
    assert csv_list("") == []


def test_number_lists():
    assert int_list("1, 2,3") == [1, 2, 3]
    assert float_list("0.25,0.5") == [0.25, 0.5]
    with pytest.raises(argparse.ArgumentTypeError, match="expected comma-separated integers, got '1,x'"):
        int_list("1,x")
    with pytest.raises(argparse.ArgumentTypeError, match="expected comma-separated numbers, got 'a'"):
        float_list("a")


def test_boolean_and_optional_values():
    assert [boolean(v) for v in ("true", "YES", "1", "false", "No", "0")] == [True] * 3 + [False] * 3
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false, got 'maybe'"):
        boolean("maybe")
    assert [str_or_none(v) for v in ("none", "OFF", "", "params")] == [None, None, None, "params"]
    assert [float_or_none(v) for v in ("None", "2.5")] == [None, 2.5]
    with pytest.raises(ValueError):
        float_or_none("x")


def test_list_types_in_a_parser(capsys):
    p = argparse.ArgumentParser(prog="tool")
    p.add_argument("--seeds", type=int_list)
    assert p.parse_args(["--seeds", "3,4"]).seeds == [3, 4]
    with pytest.raises(SystemExit):
        p.parse_args(["--seeds", "3,four"])
    assert "argument --seeds: expected comma-separated integers, got '3,four'" in capsys.readouterr().err


def test_fail_and_run_guarded_share_one_exit_status(capsys):
    assert BAD_INPUT == 1
    assert fail("tool", "no such dir") == BAD_INPUT
    assert capsys.readouterr().err == "tool: error: no such dir\n"

    def bad():
        raise ValueError("--rate must be below 1")

    assert run_guarded("tool", bad, (ValueError,)) == BAD_INPUT
    assert capsys.readouterr().err == "tool: error: --rate must be below 1\n"
    assert run_guarded("tool", lambda: None) == 0


def test_setup_logging_takes_a_level_name(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # basicConfig acts only on an unconfigured root
    monkeypatch.setattr(root, "level", root.level)
    setup_logging("warning")
    assert root.level == logging.WARNING
    assert root.handlers[0].formatter._fmt.startswith("%(asctime)s (%(module)s:%(lineno)d)")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


@pytest.mark.parametrize("path", sorted(BIN.glob("*.py")), ids=lambda p: p.stem)
def test_entry_points_do_not_import_the_package_for_a_side_effect(path):
    """Registration is a call (register_encoders()), not a bare `import espnet_ext`."""
    assert "espnet_ext" not in list(_imports(path))


@pytest.mark.parametrize("name", ["asr_train", "asr_inference", "layer_scan", "reconstruct_init"])
def test_entry_points_building_espnet_models_register_the_encoders(name):
    assert "register_encoders()" in (BIN / f"{name}.py").read_text()
