"""The U-Net's input bound against the defence's accuracy, float32 and int8, on attacked training images.

    python tools/input_bound_sweep.py --bundle mnist --bound none --bound 4 --bound 3 --bound 2 -n 200 --seed 0 \
        --attacks runs/tune_mnist_bn/attacks --out docs/results/input_bound_sweep_mnist_train200.json

The logic is diffdefense.export.input_bound_sweep.
"""

from diffdefense.export.input_bound_sweep import main

if __name__ == "__main__":
    main()
