"""Runtime against PyTorch reference on the same seeds, settings and real images.

    python tools/parity.py --dataset mnist -n 500 --preset paper --out docs/results/parity_mnist_paper.json

The logic is diffdefense.reference.parity.
"""

from diffdefense.reference.parity import main

if __name__ == "__main__":
    main()
