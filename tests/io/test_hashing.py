"""File hashes (usher2.io.hashing): equal to hashlib's SHA-256 of the bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from usher2.io.hashing import file_sha256


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # over a megabyte: more than one read block
    (tmp_path / "f.bin").write_bytes(data)
    (tmp_path / "e.bin").write_bytes(b"")
    assert file_sha256(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(tmp_path / "e.bin")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
