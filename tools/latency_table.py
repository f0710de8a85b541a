"""The latency table of docs/performance.md and the latency-accuracy plot.

    python tools/latency_table.py benchmarks/results/latency_cpu.json --plot docs/figures/latency_vs_accuracy.png

The logic is diffdefense.latency_table.
"""

from diffdefense.latency_table import main

if __name__ == "__main__":
    main()
