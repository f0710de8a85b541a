"""Whether onnxruntime's CPU provider has a fused GroupNorm kernel.

    python tools/probe_groupnorm_kernels.py --out docs/results/cpu_groupnorm_kernels.json

The logic is diffdefense.export.groupnorm_kernels.
"""

from diffdefense.export.groupnorm_kernels import main

if __name__ == "__main__":
    main()
