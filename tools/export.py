"""Export the shipped models to an ONNX bundle: the same as `diffdefense export`.

python tools/export.py --dataset mnist --out bundles/mnist
"""

from diffdefense.cli.export import export_command

if __name__ == "__main__":
    export_command()
