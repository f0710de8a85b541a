"""python -m diffdefense_fused: print what this build holds, including the GPU code in the CUDA module's binary."""

from __future__ import annotations

import json
from pathlib import Path

import diffdefense_fused
from diffdefense_fused.fatbin import cuda_binary_architectures


def main() -> None:
    info = diffdefense_fused.build_info()
    print("diffdefense_fused build:", json.dumps(info))
    if info["cuda_built"]:
        path = Path(diffdefense_fused.cuda().__file__)
        found = cuda_binary_architectures(path)
        print(f"CUDA code in {path.name}: SASS {' '.join(found.sass)}; PTX {' '.join(found.ptx)}")


if __name__ == "__main__":
    main()
