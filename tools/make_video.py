"""Make a test video for the streaming command: MNIST test digits as a camera would see them, some attacked.

    python tools/make_video.py --out runs/video/digits.mkv

Each digit is drawn as dark ink on lit paper (so the stream needs --invert), 3x nearest-neighbour upscaled into an
84 x 84 region of interest, held for --frames-per-digit frames while it shakes by a few pixels, under lighting that
drifts in brightness and slope, with Gaussian sensor noise. Every --attack-every-th digit is replaced by its
white-box PGD adversarial example against the shipped Model A (eps 0.3, as the paper). The video is lossless
(FFV1), so the attacks reach the stream except for the simulated noise. Beside it, <name>.json records every
frame's true label and whether it is attacked, the seed, and the preprocessing that recovers the digit.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import cv2
import numpy as np

from diffdefense.data import load_dataset

FRAME_SIZE = (320, 240)  # width, height
ROI = (118, 78, 84, 84)  # x, y, width, height: the digit's 28 x 28 pixels at 3x
SCALE = 3
SHAKE_PX = 3  # hand-held shake, in frame pixels (1 model pixel)
INK = 0.85  # the darkest ink reflects 15% of the paper's light


def render_frame(digit: np.ndarray, k: int, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    """One BGR uint8 frame: the digit (28 x 28 in [0, 1], light on dark) printed as ink on paper at frame k."""
    width, height = FRAME_SIZE
    gain = 0.9 + 0.1 * np.sin(2 * np.pi * k / 90)  # lighting drifts over 3 s at 30 fps
    slope = 0.15 * np.sin(2 * np.pi * k / 150)
    paper = 205.0 * gain * (1 + slope * np.linspace(-1, 1, width))[None, :].repeat(height, axis=0)
    ink = np.zeros((height, width))
    dx = int(round(SHAKE_PX * np.sin(2 * np.pi * k / 23)))
    dy = int(round(SHAKE_PX * np.cos(2 * np.pi * k / 31)))
    x, y, w, h = ROI
    ink[y + dy : y + dy + h, x + dx : x + dx + w] = np.kron(digit, np.ones((SCALE, SCALE)))
    gray = paper * (1 - INK * ink) + rng.normal(0, noise_std, (height, width))
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    # a slight colour cast, as a camera's white balance gives: the frames are BGR, not gray in disguise
    return np.stack([gray, gray, np.clip(gray.astype(np.int16) + 6, 0, 255).astype(np.uint8)], axis=-1)


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Video path (.mkv).")
@click.option("--digits", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--frames-per-digit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--attack-every", type=click.IntRange(min=0), default=3, show_default=True, help="0: none.")
@click.option("--noise-std", type=float, default=4.0, show_default=True, help="Sensor noise, in 0..255 levels.")
@click.option("--fps", type=float, default=30.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def main(out: Path, digits: int, frames_per_digit: int, attack_every: int, noise_std: float, fps: float, seed: int):
    import torch

    from diffdefense.reference.attacks import run_attack
    from diffdefense.training.loading import load_classifier

    rng = np.random.default_rng(seed)
    test = load_dataset("mnist", "test")
    indices = rng.choice(len(test), digits, replace=False)
    images, labels = test.subset(indices).as_tensors()
    attacked = np.arange(digits) % attack_every == attack_every - 1 if attack_every else np.zeros(digits, dtype=bool)
    shown = images.clone()
    if attacked.any():
        mask = torch.from_numpy(attacked)
        shown[mask] = run_attack("PGD", load_classifier("mnist", "model_a"), images[mask], labels[mask], seed=seed)
    shown = shown.numpy()[:, 0]

    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"FFV1"), fps, FRAME_SIZE)
    if not writer.isOpened():
        raise click.ClickException(f"OpenCV cannot write an FFV1 video at {out}; use a .mkv or .avi name.")
    frames = []
    for d in range(digits):
        for _ in range(frames_per_digit):
            writer.write(render_frame(shown[d], len(frames), rng, noise_std))
            frames.append({"label": int(labels[d]), "attacked": bool(attacked[d]), "digit": d})
    writer.release()
    truth = {
        "video": out.name,
        "fps": fps,
        "frames": frames,
        "test_indices": indices.tolist(),
        "preprocessing": {"roi": list(ROI), "invert": True, "value_range": "auto"},
        "attack": "white-box PGD against the shipped MNIST Model A, eps 0.3 (diffdefense.reference.attacks)",
        "command": f"python tools/make_video.py --out {out} --digits {digits} --frames-per-digit {frames_per_digit} "
        f"--attack-every {attack_every} --noise-std {noise_std} --fps {fps} --seed {seed}",
    }
    out.with_suffix(".json").write_text(json.dumps(truth, indent=1))
    click.echo(f"Wrote {len(frames)} frames ({int(attacked.sum())} of {digits} digits attacked) to {out}.")


if __name__ == "__main__":
    main()
