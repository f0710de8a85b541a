"""The side-by-side comparison of docs/performance.md timed in turns (every round runs every contender once):

    python tools/side_by_side.py --rounds 11 --out benchmarks/results/side_by_side_cpu.json

The logic is diffdefense.reference.side_by_side; benchmarks/test_bench_defense.py times the same contenders one after
another with pytest-benchmark.
"""

from diffdefense.reference.side_by_side import main

if __name__ == "__main__":
    main()
