"""Soak test: a long stream with its memory measured.

    nice -n 10 python tools/soak.py --frames 20000 --out docs/results/soak_20000.json

The logic is diffdefense.runtime.stream.soak.
"""

from diffdefense.runtime.stream.soak import main

if __name__ == "__main__":
    main()
