"""The runtime's accuracy on an evaluation report's own images, beside the reference's.

    python tools/runtime_table.py --report docs/results/mnist_blank_start_1000

The logic is diffdefense.reference.runtime_table.
"""

from diffdefense.reference.runtime_table import main

if __name__ == "__main__":
    main()
