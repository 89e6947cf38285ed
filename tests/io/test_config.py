"""The settings reader (usher2.io.config): mappings read, unknown keys and bad files named."""

from __future__ import annotations

from pathlib import Path

import pytest

from usher2.io.config import check_keys, read_mapping
from usher2.io.errors import InputError


def test_read_mapping_reads_yaml_json_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("seed: 3\nmodels: [dlr]\n")
    (tmp_path / "b.json").write_text('{"seed": 4}')
    (tmp_path / "c.yaml").write_text("")
    assert read_mapping(tmp_path / "a.yaml", "x") == {"seed": 3, "models": ["dlr"]}
    assert read_mapping(tmp_path / "b.json", "x") == {"seed": 4}
    assert read_mapping(tmp_path / "c.yaml", "x") == {}


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"gone\.yaml: expected a pipeline file, got no such file"):
        read_mapping(tmp_path / "gone.yaml", "a pipeline file")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match=r"list\.yaml: expected a pipeline file: a mapping of settings, got list"):
        read_mapping(tmp_path / "list.yaml", "a pipeline file")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(InputError, match=r"bad\.yaml: expected a pipeline file in valid YAML, got a parse error"):
        read_mapping(tmp_path / "bad.yaml", "a pipeline file")


def test_check_keys_names_the_unknown_key_and_the_known_ones() -> None:
    check_keys("p.yaml", {"seed": 1}, ["seed", "models"])  # known keys pass
    with pytest.raises(InputError) as info:
        check_keys("p.yaml", {"seed": 1, "sede": 2, "modles": 3}, ["seed", "models"])
    assert str(info.value) == "p.yaml: expected keys among models, seed, got unknown keys ['modles', 'sede']"
