"""Sweep defence settings on attacked *training* images.

    python tools/tune_preset.py --dataset mnist -n 200 --out runs/tune_mnist \
        --try "num_steps=10" --try "num_candidates=3,iterations=3"

The logic is diffdefense.reference.preset_sweep.
"""

from diffdefense.reference.preset_sweep import main

if __name__ == "__main__":
    main()
