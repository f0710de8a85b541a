"""The side-by-side latency table of docs/performance.md.

    python tools/speedup_table.py benchmarks/results/defense_cpu.json

The logic is diffdefense.speedup.
"""

from diffdefense.speedup import main

if __name__ == "__main__":
    main()
