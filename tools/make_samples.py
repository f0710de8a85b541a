"""Make the shipped sample images: clean test images and PGD-attacked ones.

    python tools/make_samples.py --dataset mnist

The logic is diffdefense.reference.sample_images.
"""

from diffdefense.reference.sample_images import main

if __name__ == "__main__":
    main()
