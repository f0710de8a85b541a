"""Peak resident memory of one Defender call against its batch size.

    python tools/memory_table.py --batch-sizes 8,64,256 --compare-batch 8

The logic is diffdefense.runtime.memory_table.
"""

from diffdefense.runtime.memory_table import main

if __name__ == "__main__":
    main()
