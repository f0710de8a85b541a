"""Why a bundle's U-Net loses accuracy in int8: the defence's inputs, the activations' range, the output clamp.

    python tools/int8_diagnosis.py --bundle mnist-fast -n 64 --seed 0 --out docs/results/int8_diagnosis_mnist_fast.json

The logic is diffdefense.export.int8_diagnosis.
"""

from diffdefense.export.int8_diagnosis import main

if __name__ == "__main__":
    main()
