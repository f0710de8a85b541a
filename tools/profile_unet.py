"""The shipped U-Net under onnxruntime's profiler, per operator type.

    python tools/profile_unet.py --batch 96 --out docs/results/unet_profile_cpu_batch96.json

The logic is diffdefense.export.unet_profile.
"""

from diffdefense.export.unet_profile import main

if __name__ == "__main__":
    main()
