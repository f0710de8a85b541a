"""The runtime's accuracy and detection AUROC on cached adversarial sets.

    python tools/runtime_accuracy.py --attack-cache DIR --precision float32 --out docs/results/runtime_mnist_1000.json

The logic is diffdefense.reference.runtime_accuracy.
"""

from diffdefense.reference.runtime_accuracy import main

if __name__ == "__main__":
    main()
