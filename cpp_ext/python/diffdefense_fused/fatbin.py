"""The GPU code a built binary really holds, read from its CUDA fat binaries (what `cuobjdump --list-elf
--list-ptx` reports), for machines whose CUDA install has no cuobjdump.

A fat binary is a 16-byte header (magic 0xBA55ED50, version, header size, payload size) followed by entries,
each a header (kind: 1 PTX, 2 ELF/SASS; its own size; the payload size; the architecture at byte 28) and a payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = struct.pack("<I", 0xBA55ED50)
KIND_PTX, KIND_SASS = 1, 2


@dataclass(frozen=True)
class CudaArchitectures:
    sass: list[str]  # real machine code, e.g. 'sm_87'
    ptx: list[str]  # virtual code the driver can JIT for newer GPUs, e.g. 'compute_90'


def cuda_binary_architectures(path: str | Path) -> CudaArchitectures:
    data = Path(path).read_bytes()
    sass, ptx = set(), set()
    start = data.find(MAGIC)
    while start != -1:
        _, header_size, payload_size = struct.unpack_from("<HHQ", data, start + 4)
        entry, end = start + header_size, start + header_size + payload_size
        while entry < end:
            kind, _, entry_header_size, entry_size = struct.unpack_from("<HHIQ", data, entry)
            if entry_header_size == 0:  # not a real entry: stop rather than loop
                break
            (arch,) = struct.unpack_from("<I", data, entry + 28)
            if kind == KIND_SASS:
                sass.add(arch)
            elif kind == KIND_PTX:
                ptx.add(arch)
            entry += entry_header_size + entry_size
        start = data.find(MAGIC, end)
    return CudaArchitectures([f"sm_{a}" for a in sorted(sass)], [f"compute_{a}" for a in sorted(ptx)])
