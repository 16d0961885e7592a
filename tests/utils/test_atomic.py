"""Atomic writes (espnet_ext.utils.atomic): content, file mode, no temporary file left behind."""

from __future__ import annotations

import json
import os
import stat

import pytest

from espnet_ext.utils.atomic import (
    atomic_output,
    default_dir_mode,
    default_file_mode,
    save_torch_atomic,
    write_json_atomic,
    write_text_atomic,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_text_content_mode_and_parents(tmp_path, umask_022):
    path = tmp_path / "a" / "b" / "f.txt"
    write_text_atomic(path, "x\ny\n")
    assert path.read_bytes() == b"x\ny\n"
    assert _mode(path) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]
    os.umask(0o002)  # derived from the umask, not fixed
    write_text_atomic(path, "z\n")
    assert path.read_text() == "z\n" and _mode(path) == 0o664


def test_default_modes_follow_the_umask(umask_022):
    assert (default_file_mode(), default_dir_mode()) == (0o644, 0o755)
    os.umask(0o027)
    assert (default_file_mode(), default_dir_mode()) == (0o640, 0o750)


def test_write_json(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=1) + "\n"
    write_json_atomic(path, {"b": 1, "a": 2}, indent=2, sort_keys=True)
    assert path.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'


def test_save_torch(tmp_path, umask_022):
    import torch

    path = tmp_path / "m.pth"
    save_torch_atomic({"w": torch.arange(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert _mode(path) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]


def test_atomic_output_yields_a_hidden_sibling(tmp_path, umask_022):
    target = tmp_path / "out.bin"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.exists()
        assert _mode(tmp) == 0o644  # not mkstemp's 0o600
        assert not target.exists()  # nothing published before the block ends
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failure_leaves_target_untouched_and_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_failed_write_text_leaves_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old\n")
    with pytest.raises(TypeError):
        write_text_atomic(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_failed_torch_save_leaves_no_temp(tmp_path):
    target = tmp_path / "m.pth"
    with pytest.raises(Exception):
        save_torch_atomic(lambda: None, target)  # a lambda cannot be pickled
    assert list(tmp_path.iterdir()) == []
