"""Atomic writing: a file appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.io import atomic_path, write_json, write_text


def test_complete_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "table.txt"
    write_text("old", dest)
    write_text("new", dest)
    assert dest.read_text() == "new"
    assert [p.name for p in dest.parent.iterdir()] == ["table.txt"]
    write_json({"a": 1}, tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text().strip() == '{\n  "a": 1\n}'


def test_interrupted_write_keeps_the_old_file_and_no_partial(tmp_path: Path) -> None:
    dest = tmp_path / "result.parquet"
    write_text("complete old version", dest)
    with pytest.raises(KeyboardInterrupt), atomic_path(dest) as tmp:
        tmp.write_text("half of the new ver")
        raise KeyboardInterrupt
    assert dest.read_text() == "complete old version"
    assert [p.name for p in tmp_path.iterdir()] == ["result.parquet"]


def test_interrupted_first_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.json") as tmp:
        assert tmp.suffix == ".json"  # writers that read the suffix see the real one
        tmp.write_text("{")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
