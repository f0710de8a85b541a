"""Regenerate an evaluation report: the same as `diffdefense evaluate`.

python tools/evaluate.py --dataset mnist --preset paper -n 1000 --out reports/mnist_paper
"""

from diffdefense.cli.evaluate import evaluate_command

if __name__ == "__main__":
    evaluate_command()
