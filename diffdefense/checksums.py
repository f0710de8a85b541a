"""The one sha256 of the project: shipped weights, bundle files and TensorRT engines are all checked with it.

Standard library only, so the lean runtime can use it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK_BYTES = 1 << 20  # a file is hashed a block at a time, never read whole


def sha256_of(source: Path | str | bytes | bytearray | memoryview) -> str:
    """The hex sha256 of bytes already in memory (hashed as they are: the bytes that were checked are the bytes that
    run), or of the file at a path (read in blocks)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
