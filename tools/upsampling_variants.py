"""Exact rewrites of the U-Net's nearest upsampling without a Resize, timed beside the shipped graph.

    python tools/upsampling_variants.py --bundle mnist --timestep 14 -n 64 --seed 0 --rounds 21 \
        --out docs/results/upsampling_variants_mnist_t14.json

The logic is diffdefense.export.upsampling_variants.
"""

from diffdefense.export.upsampling_variants import main

if __name__ == "__main__":
    main()
